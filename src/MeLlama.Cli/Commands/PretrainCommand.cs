using System.CommandLine;
using MeLlama.Core.Logging;
using MeLlama.Distributed;
using MeLlama.Training.Config;
using MeLlama.Training.Loop;
using MeLlama.Training.Runtime;
using MeLlama.Training.Sources;
using Serilog;

namespace MeLlama.Cli.Commands;

/// <summary>
/// `mellama pretrain`: continual pretraining with exact resume and preemption-safe checkpoints. Under `mellama launch`,
/// torchrun or srun (RANK/WORLD_SIZE or SLURM_* variables) every process is one rank of a sharded run.
/// </summary>
public static class PretrainCommand
{
    public static Command Create()
    {
        var recipe = TrainingCommand.CreateOptions("Training recipe", ConfigLoader.BuiltInNames, "--set optimizer.lr=1e-5 --set data.datasets.0.weight=2");
        var synthetic = new Option<bool>("--synthetic-data") { Description = "Train on uniform random tokens instead of data.datasets (throughput benchmarks only)" };
        var command = new Command("pretrain",
            "Continual pretraining of a LLaMA model on prepared datasets. Resumes by itself from the run folder's newest good checkpoint.\n" +
            "Exit codes: 0 finished; 1 failure (incl. repeated non-finite steps, last good state saved); 2 bad config/input; " +
            "75 stopped by SIGTERM/SIGUSR1/SIGINT or --time-limit after saving a checkpoint: run the same command again (Slurm: requeue) to continue.\n" +
            "Sharded: `mellama launch --nproc N -- pretrain ...` (or srun/torchrun) trains with parallel.strategy over N ranks; a signal to any rank stops all.");
        foreach (var option in recipe.All) command.Options.Add(option);
        command.Options.Add(synthetic);
        command.SetAction(parse =>
        {
            if (TrainingCommand.Load(parse, recipe, "pretrain", ConfigLoader.Load, [], out int code) is not { } loaded) return code;
            var cfg = loaded.Config;
            if (parse.GetValue(recipe.PrintConfig))
            {
                Console.WriteLine(ConfigLoader.ToJson(cfg));
                return 0;
            }
            DistributedEnvironment env;
            try { env = Rendezvous.FromEnvironment(); }
            catch (DistributedEnvironmentException e) { return CommandFailures.Report(e, parse.InvocationConfiguration.Error, "pretrain"); }
            int? rank = env.IsDistributed ? env.Rank : null;
            var logOptions = GlobalOptions.LogOptions(parse, rank);
            logOptions = logOptions with { JsonFile = RankLogFile(logOptions.JsonFile ?? Path.Combine(cfg.RunDir, "logs", "pretrain.jsonl"), env) };
            using var log = LogSetup.Create(logOptions);
            string spec = parse.GetValue(recipe.Config)!;
            log.Information("Recipe: {Recipe}{Hint}; run folder {RunDir}", spec, ConfigLoader.BuiltInNames.Contains(spec) && !File.Exists(spec) ? " (built-in; --config FILE for your own)" : "", Path.GetFullPath(cfg.RunDir));
            return Run(cfg, log, loaded.TimeLimit, resume: !parse.GetValue(recipe.NoResume), progress: !parse.GetValue(GlobalOptions.Quiet), parse.GetValue(synthetic), env);
        });
        return command;
    }

    /// <summary>
    /// Rank 0 logs to <paramref name="path"/>, rank r to <c>NAME.rankR.jsonl</c> beside it: several processes appending to
    /// one file would interleave partial lines.
    /// </summary>
    public static string RankLogFile(string path, DistributedEnvironment env)
    {
        if (!env.IsDistributed || env.Rank == 0) return path;
        string dir = Path.GetDirectoryName(path) ?? "";
        return Path.Combine(dir, $"{Path.GetFileNameWithoutExtension(path)}.rank{env.Rank}{Path.GetExtension(path)}");
    }

    /// <summary>
    /// Runs a resolved recipe (shared with `mellama demo`) as rank <paramref name="env"/> (one process when null); returns
    /// the process exit code. A rank that fails tells the others (abort notice) so they stop at once instead of waiting
    /// for a collective timeout.
    /// </summary>
    public static int Run(TrainConfig cfg, ILogger log, TimeSpan? limit, bool resume, bool progress, bool syntheticData = false, DistributedEnvironment? env = null)
    {
        env ??= DistributedEnvironment.Single;
        using var signals = new StopSignals();
        TrainingWorld? world = null;
        string who = env.IsDistributed ? $"rank {env.Rank}: " : "";
        try
        {
            return TrainingCommand.Run(log, "pretrain", cfg.RunDir, () =>
            {
                world = TrainingWorld.Join(env, TrainingWorld.ResolveDevice(cfg.Device, env), log);
                if (world.IsDistributed) log.Information("Rank {Rank} of {World} joined the job ({Backend} backend)", world.Rank, world.Size, world.Comm!.Backend);
                IDataProvider data = syntheticData
                    ? new SyntheticDataProvider(cfg.Model.Arch?.VocabSize ?? throw new ConfigError("--synthetic-data needs model.arch.vocab_size"), world.Rank, world.Size)
                    : new PreparedDataProvider(cfg.Data, world.Rank, world.Size);
                return new Trainer(cfg, new TrainerOptions
                {
                    Data = data, Log = log, Resume = resume, TimeLimit = limit, Signals = signals, World = world,
                    Progress = progress && !Console.IsErrorRedirected,
                }).Run();
            },
            // Another rank that died, failed or stopped answering is named by the collective's message; any other
            // failure here is told to the other ranks so they stop at once instead of waiting for a timeout.
            onFailure: e => { if (e is not CollectiveException) world?.Abort(who + CommandFailures.Classify(e).Message); });
        }
        finally
        {
            world?.Dispose();
        }
    }
}
