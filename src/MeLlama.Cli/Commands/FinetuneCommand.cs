using System.CommandLine;
using MeLlama.Core.Logging;
using MeLlama.Distributed;
using MeLlama.Training.Config;
using MeLlama.Training.Finetune.Config;
using MeLlama.Training.Finetune.Loop;
using MeLlama.Training.Loop;
using MeLlama.Training.Runtime;

namespace MeLlama.Cli.Commands;

/// <summary>
/// `mellama finetune`: instruction tuning (LoRA or full) with the pretraining run's checkpoints, resume and preemption handling.
/// Under `mellama launch`, torchrun or srun every process is one rank of a sharded full fine-tune (LoRA refuses: one process).
/// </summary>
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
            "Exit codes: 0 finished; 1 failure; 2 bad config/input; 75 stopped by SIGTERM/SIGUSR1/SIGINT or --time-limit after saving: run again to continue.\n" +
            "Several ranks: `mellama launch --nproc N -- finetune ...` (or srun/torchrun); method full shards the model with parallel.strategy, " +
            "method lora is data parallel (every rank holds the whole frozen base model and the same adapters; gradients summed over ranks).");
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
            DistributedEnvironment env;
            try { env = Rendezvous.FromEnvironment(); }
            catch (DistributedEnvironmentException e) { return CommandFailures.Report(e, parse.InvocationConfiguration.Error, "finetune"); }
            var logOptions = GlobalOptions.LogOptions(parse, env.IsDistributed ? env.Rank : null);
            logOptions = logOptions with { JsonFile = PretrainCommand.RankLogFile(logOptions.JsonFile ?? Path.Combine(cfg.RunDir, "logs", "finetune.jsonl"), env) };
            using var log = LogSetup.Create(logOptions);
            using var signals = new StopSignals();
            TrainingWorld? world = null;
            string who = env.IsDistributed ? $"rank {env.Rank}: " : "";
            try
            {
                return TrainingCommand.Run(log, "finetune", cfg.RunDir, () =>
                {
                    if (env.IsDistributed)
                    {
                        world = TrainingWorld.Join(env, TrainingWorld.ResolveDevice(cfg.Device, env), log);
                        log.Information("Rank {Rank} of {World} joined the job ({Backend} backend)", world.Rank, world.Size, world.Comm!.Backend);
                    }
                    return new FinetuneTrainer(cfg, new FinetuneOptions
                    {
                        Log = log, Resume = !parse.GetValue(recipe.NoResume), TimeLimit = loaded.TimeLimit, Signals = signals, World = world,
                        Progress = !parse.GetValue(GlobalOptions.Quiet) && !Console.IsErrorRedirected,
                    }).Run();
                }, afterOutcome: outcome =>
                {
                    if (outcome.End == TrainEnd.Completed && env.Rank == 0)
                        log.Information("Export: mellama export --checkpoint {RunDir} --out MODEL_DIR{Mode}", Path.GetFullPath(cfg.RunDir), cfg.Method == "lora" ? " [--adapter-mode merge|peft]" : "");
                },
                // Another rank that died or failed is named by the collective's message; any other failure here is told
                // to the other ranks so they stop at once instead of waiting for a timeout.
                onFailure: e => { if (e is not CollectiveException) world?.Abort(who + CommandFailures.Classify(e).Message); });
            }
            finally
            {
                world?.Dispose();
            }
        });
        return command;
    }
}
