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
        var config = new Option<string>("--config", "-c")
        {
            Description = $"Training recipe: a JSON file, or a built-in recipe name ({string.Join(", ", ConfigLoader.BuiltInNames)}). Default: demo",
            DefaultValueFactory = _ => "demo",
        };
        var set = new Option<string[]>("--set") { Description = "Override a config key, e.g. --set optimizer.lr=1e-5 --set data.datasets.0.weight=2 (repeatable)", AllowMultipleArgumentsPerToken = false };
        var runDir = new Option<string?>("--run-dir") { Description = "Shorthand for --set run_dir=DIR" };
        var timeLimit = new Option<string?>("--time-limit") { Description = "Wall-clock budget (3600, 45m, 3h50m, 23:50:00): save and exit 75 before it runs out" };
        var noResume = new Option<bool>("--no-resume") { Description = "Do not continue from the run folder's checkpoints (refuses to start if there are some)" };
        var printConfig = new Option<bool>("--print-config") { Description = "Print the resolved config as JSON and exit" };
        var synthetic = new Option<bool>("--synthetic-data") { Description = "Train on uniform random tokens instead of data.datasets (throughput benchmarks only)" };
        var command = new Command("pretrain",
            "Continual pretraining of a LLaMA model on prepared datasets. Resumes by itself from the run folder's newest good checkpoint.\n" +
            "Exit codes: 0 finished; 1 failure (incl. repeated non-finite steps, last good state saved); 2 bad config/input; " +
            "75 stopped by SIGTERM/SIGUSR1/SIGINT or --time-limit after saving a checkpoint: run the same command again (Slurm: requeue) to continue.\n" +
            "Sharded: `mellama launch --nproc N -- pretrain ...` (or srun/torchrun) trains with parallel.strategy over N ranks; a signal to any rank stops all.")
        {
            config, set, runDir, timeLimit, noResume, printConfig, synthetic,
        };
        command.SetAction(parse =>
        {
            var overrides = (parse.GetValue(set) ?? []).ToList();
            if (parse.GetValue(runDir) is { } rd) overrides.Add("run_dir=" + System.Text.Json.JsonSerializer.Serialize(rd));
            TrainConfig cfg;
            TimeSpan? limit = null;
            try
            {
                cfg = ConfigLoader.Load(parse.GetValue(config)!, overrides);
                if (parse.GetValue(timeLimit) is { } tl) limit = TimeBudget.Parse(tl);
            }
            catch (Exception e) when (e is ConfigError or FormatException or IOException)
            {
                Console.Error.WriteLine($"error: {e.Message}");
                return ExitCodes.BadInput;
            }
            if (parse.GetValue(printConfig))
            {
                Console.WriteLine(ConfigLoader.ToJson(cfg));
                return 0;
            }
            DistributedEnvironment env;
            try { env = Rendezvous.FromEnvironment(); }
            catch (DistributedEnvironmentException e)
            {
                Console.Error.WriteLine($"error: {e.Message}");
                return ExitCodes.BadInput;
            }
            int? rank = env.IsDistributed ? env.Rank : null;
            var logOptions = GlobalOptions.LogOptions(parse, rank);
            logOptions = logOptions with { JsonFile = RankLogFile(logOptions.JsonFile ?? Path.Combine(cfg.RunDir, "logs", "pretrain.jsonl"), env) };
            using var log = LogSetup.Create(logOptions);
            string spec = parse.GetValue(config)!;
            log.Information("Recipe: {Recipe}{Hint}; run folder {RunDir}", spec, ConfigLoader.BuiltInNames.Contains(spec) && !File.Exists(spec) ? " (built-in; --config FILE for your own)" : "", Path.GetFullPath(cfg.RunDir));
            return Run(cfg, log, limit, resume: !parse.GetValue(noResume), progress: !parse.GetValue(GlobalOptions.Quiet), parse.GetValue(synthetic), env);
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
            try
            {
                world = TrainingWorld.Join(env, TrainingWorld.ResolveDevice(cfg.Device, env), log);
            }
            catch (Exception e) when (e is PeerAuthenticationException or TimeoutException or IOException)
            {
                log.Fatal("Could not join the job ({Environment}): {Message}", env.ToString(), e.Message);
                return ExitCodes.Failed;
            }
            if (world.IsDistributed) log.Information("Rank {Rank} of {World} joined the job ({Backend} backend)", world.Rank, world.Size, world.Comm!.Backend);
            IDataProvider data = syntheticData
                ? new SyntheticDataProvider(cfg.Model.Arch?.VocabSize ?? throw new ConfigError("--synthetic-data needs model.arch.vocab_size"), world.Rank, world.Size)
                : new PreparedDataProvider(cfg.Data, world.Rank, world.Size);
            var trainer = new Trainer(cfg, new TrainerOptions
            {
                Data = data, Log = log, Resume = resume, TimeLimit = limit, Signals = signals, World = world,
                Progress = progress && !Console.IsErrorRedirected,
            });
            var outcome = trainer.Run();
            if (outcome.End == TrainEnd.Completed)
                foreach (var (domain, first) in outcome.FirstEval)
                    if (outcome.LastEval.TryGetValue(domain, out var last))
                        log.Information("Held-out {Domain}: loss {First:F4} → {Last:F4}", domain, first, last);
            if (outcome.End == TrainEnd.Diverged) log.Error("{Message}", outcome.Message);
            else log.Information("{Message}; checkpoint {Checkpoint}; run folder {RunDir} (exit {Code})", outcome.Message, outcome.Checkpoint, Path.GetFullPath(cfg.RunDir), outcome.ExitCode);
            return outcome.ExitCode;
        }
        catch (ConfigError e)
        {
            log.Error("{Message}", e.Message);
            world?.Abort(who + e.Message);
            return ExitCodes.BadInput;
        }
        catch (DistributedEnvironmentException e)
        {
            log.Error("{Message}", e.Message);
            return ExitCodes.BadInput;
        }
        catch (CollectiveException e)
        {
            // Another rank died, failed or stopped answering: the message names it. Exit non-zero; the job restarts from its last checkpoint.
            log.Fatal("Collectives failed: {Message}", e.Message);
            return ExitCodes.Failed;
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or InvalidDataException or ArgumentException)
        {
            log.Error("{Message}", e.Message);
            world?.Abort(who + e.Message);
            return ExitCodes.BadInput;
        }
        catch (Exception e)
        {
            log.Fatal(e, "pretrain failed");
            world?.Abort(who + e.Message);
            return ExitCodes.Failed;
        }
        finally
        {
            world?.Dispose();
        }
    }
}
