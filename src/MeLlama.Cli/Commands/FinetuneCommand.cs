using System.CommandLine;
using MeLlama.Core.Logging;
using MeLlama.Distributed;
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
        var recipe = TrainingCommand.CreateOptions("Fine-tuning recipe", FinetuneConfigLoader.BuiltInNames, "--set lora.rank=16 --set data.train=[\"a.jsonl\"]");
        var data = new Option<string[]>("--data") { Description = "Shorthand for --set data.train=[FILES] (instruction JSON/JSONL files; repeatable)" };
        var command = new Command("finetune",
            "Instruction-tune a LLaMA model: LoRA adapters on a frozen base (method lora) or all weights (method full), loss on assistant tokens only, " +
            "chat template recorded for export. Resumes by itself from the run folder's newest good checkpoint; `mellama export --checkpoint RUN` " +
            "writes the model (--adapter-mode merge|peft).\n" +
            "Exit codes: 0 finished; 1 failure; 2 bad config/input; 75 stopped by SIGTERM/SIGUSR1/SIGINT or --time-limit after saving: run again to continue.");
        foreach (var option in recipe.All) command.Options.Add(option);
        command.Options.Add(data);
        command.SetAction(parse =>
        {
            string[] dataFiles = parse.GetValue(data) is { Length: > 0 } files ? ["data.train=" + System.Text.Json.JsonSerializer.Serialize(files)] : [];
            if (TrainingCommand.Load(parse, recipe, "finetune", FinetuneConfigLoader.Load, dataFiles, out int code) is not { } loaded) return code;
            var cfg = loaded.Config;
            if (parse.GetValue(recipe.PrintConfig))
            {
                Console.WriteLine(FinetuneConfigLoader.ToJson(cfg));
                return 0;
            }
            // Fine-tuning runs on one process. Several ranks of a launch/torchrun/srun job would each train the same
            // model into the same run folder and overwrite each other's checkpoints: refuse before touching it.
            DistributedEnvironment env;
            try { env = Rendezvous.FromEnvironment(); }
            catch (DistributedEnvironmentException e) { return CommandFailures.Report(e, parse.InvocationConfiguration.Error, "finetune"); }
            if (env.IsDistributed)
                return CommandFailures.Report(new ConfigError(
                    $"finetune runs on one process, but this one is rank {env.Rank} of {env.WorldSize} ({(env.Source == LaunchSource.Slurm ? "Slurm" : "RANK/WORLD_SIZE")} variables); sharded fine-tuning is not built yet. " +
                    "Start it once: without `mellama launch`/torchrun, or with one Slurm task (srun --ntasks=1, scripts/slurm/instruct.sbatch)"),
                    parse.InvocationConfiguration.Error, "finetune");
            var logOptions = GlobalOptions.LogOptions(parse);
            logOptions = logOptions with { JsonFile = logOptions.JsonFile ?? Path.Combine(cfg.RunDir, "logs", "finetune.jsonl") };
            using var log = LogSetup.Create(logOptions);
            using var signals = new StopSignals();
            return TrainingCommand.Run(log, "finetune", cfg.RunDir, () => new FinetuneTrainer(cfg, new FinetuneOptions
            {
                Log = log, Resume = !parse.GetValue(recipe.NoResume), TimeLimit = loaded.TimeLimit, Signals = signals,
                Progress = !parse.GetValue(GlobalOptions.Quiet) && !Console.IsErrorRedirected,
            }).Run(), afterOutcome: outcome =>
            {
                if (outcome.End == TrainEnd.Completed)
                    log.Information("Export: mellama export --checkpoint {RunDir} --out MODEL_DIR{Mode}", Path.GetFullPath(cfg.RunDir), cfg.Method == "lora" ? " [--adapter-mode merge|peft]" : "");
            });
        });
        return command;
    }
}
