using System.CommandLine;
using MeLlama.Core.Logging;
using MeLlama.Training.Config;
using MeLlama.Training.Finetune.Config;
using MeLlama.Training.Finetune.Loop;
using MeLlama.Training.Loop;
using MeLlama.Training.Runtime;

namespace MeLlama.Cli.Commands;

/// <summary>`mellama finetune`: instruction tuning (LoRA or full) with the pretraining run's checkpoints, resume and preemption handling.</summary>
public static class FinetuneCommand
{
    public static Command Create()
    {
        var config = new Option<string>("--config", "-c")
        {
            Description = $"Fine-tuning recipe: a JSON file, or a built-in one ({string.Join(", ", FinetuneConfigLoader.BuiltInNames)}). Default: demo",
            DefaultValueFactory = _ => "demo",
        };
        var set = new Option<string[]>("--set") { Description = "Override a config key, e.g. --set lora.rank=16 --set data.train=[\"a.jsonl\"] (repeatable)" };
        var runDir = new Option<string?>("--run-dir") { Description = "Shorthand for --set run_dir=DIR" };
        var data = new Option<string[]>("--data") { Description = "Shorthand for --set data.train=[FILES] (instruction JSON/JSONL files; repeatable)" };
        var timeLimit = new Option<string?>("--time-limit") { Description = "Wall-clock budget (3600, 45m, 3h50m, 23:50:00): save and exit 75 before it runs out" };
        var noResume = new Option<bool>("--no-resume") { Description = "Do not continue from the run folder's checkpoints (refuses to start if there are some)" };
        var printConfig = new Option<bool>("--print-config") { Description = "Print the resolved config as JSON and exit" };
        var command = new Command("finetune",
            "Instruction-tune a LLaMA model: LoRA adapters on a frozen base (method lora) or all weights (method full), loss on assistant tokens only, " +
            "chat template recorded for export. Resumes by itself from the run folder's newest good checkpoint; `mellama export --checkpoint RUN` " +
            "writes the model (--adapter-mode merge|peft).\n" +
            "Exit codes: 0 finished; 1 failure; 2 bad config/input; 75 stopped by SIGTERM/SIGUSR1/SIGINT or --time-limit after saving: run again to continue.")
        {
            config, set, runDir, data, timeLimit, noResume, printConfig,
        };
        command.SetAction(parse =>
        {
            var overrides = (parse.GetValue(set) ?? []).ToList();
            if (parse.GetValue(runDir) is { } rd) overrides.Add("run_dir=" + System.Text.Json.JsonSerializer.Serialize(rd));
            if (parse.GetValue(data) is { Length: > 0 } files) overrides.Add("data.train=" + System.Text.Json.JsonSerializer.Serialize(files));
            FinetuneConfig cfg;
            TimeSpan? limit = null;
            try
            {
                cfg = FinetuneConfigLoader.Load(parse.GetValue(config)!, overrides);
                if (parse.GetValue(timeLimit) is { } tl) limit = TimeBudget.Parse(tl);
            }
            catch (Exception e) when (e is ConfigError or FormatException or IOException)
            {
                Console.Error.WriteLine($"error: {e.Message}");
                return ExitCodes.BadInput;
            }
            if (parse.GetValue(printConfig))
            {
                Console.WriteLine(FinetuneConfigLoader.ToJson(cfg));
                return 0;
            }
            var logOptions = GlobalOptions.LogOptions(parse);
            logOptions = logOptions with { JsonFile = logOptions.JsonFile ?? Path.Combine(cfg.RunDir, "logs", "finetune.jsonl") };
            using var log = LogSetup.Create(logOptions);
            using var signals = new StopSignals();
            try
            {
                var outcome = new FinetuneTrainer(cfg, new FinetuneOptions
                {
                    Log = log, Resume = !parse.GetValue(noResume), TimeLimit = limit, Signals = signals,
                    Progress = !parse.GetValue(GlobalOptions.Quiet) && !Console.IsErrorRedirected,
                }).Run();
                foreach (var (set, first) in outcome.FirstEval)
                    if (outcome.LastEval.TryGetValue(set, out var last)) log.Information("Held-out assistant-token loss: {First:F4} → {Last:F4}", first, last);
                if (outcome.End == TrainEnd.Diverged) log.Error("{Message}", outcome.Message);
                else log.Information("{Message}; checkpoint {Checkpoint} (exit {Code})", outcome.Message, outcome.Checkpoint, outcome.ExitCode);
                if (outcome.End == TrainEnd.Completed)
                    log.Information("Export: mellama export --checkpoint {RunDir} --out MODEL_DIR{Mode}", Path.GetFullPath(cfg.RunDir), cfg.Method == "lora" ? " [--adapter-mode merge|peft]" : "");
                return outcome.ExitCode;
            }
            catch (ConfigError e)
            {
                log.Error("{Message}", e.Message);
                return ExitCodes.BadInput;
            }
            catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or InvalidDataException or ArgumentException or NotSupportedException)
            {
                log.Error("{Message}", e.Message);
                return ExitCodes.BadInput;
            }
            catch (Exception e)
            {
                log.Fatal(e, "finetune failed");
                return ExitCodes.Failed;
            }
        });
        return command;
    }
}
