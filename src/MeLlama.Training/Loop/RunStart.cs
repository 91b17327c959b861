using System.Diagnostics;
using System.Text.Json;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Config;
using MeLlama.Training.Engine;
using MeLlama.Training.Optim;
using MeLlama.Training.Runtime;
using Serilog;
using TorchSharp;

namespace MeLlama.Training.Loop;

/// <summary>How one invocation of a trainer runs, whatever it trains (pretraining and fine-tuning options map onto it).</summary>
public record RunControls
{
    public ILogger Log { get; init; } = Serilog.Core.Logger.None;
    /// <summary>Continue from the run folder's newest good checkpoint. False: refuse to start when one exists.</summary>
    public bool Resume { get; init; } = true;
    /// <summary>Wall-clock budget; the loop saves and ends with <see cref="TrainEnd.TimeLimit"/> before it runs out.</summary>
    public TimeSpan? TimeLimit { get; init; }
    public StopSignals? Signals { get; init; }
    public bool Progress { get; init; }
    /// <summary>Test hook: called after each optimizer step with the step number.</summary>
    public Action<long>? AfterStep { get; init; }
}

/// <summary>
/// What the attempts of one invocation share (<see cref="RunStart.RunWithFallback"/>): the checkpoints found corrupt
/// while loading, and the clock, so the wall-clock budget (`--time-limit`) and the elapsed time count from the
/// invocation's start, not from the attempt that followed a rejected checkpoint.
/// </summary>
public sealed class RunAttempts
{
    public Dictionary<long, string> Rejected { get; } = [];
    public Stopwatch Wall { get; } = Stopwatch.StartNew();
    public DateTime StartUtc { get; } = DateTime.UtcNow;
}

/// <summary>
/// The start every training run shares: threads and seed, the run folder and its checkpoint store, and which
/// checkpoint (if any) to continue from with its <see cref="TrainerState"/>. Made once per attempt of
/// <see cref="RunWithFallback"/>; the trainer then builds its model and engine and calls <see cref="TryLoadState"/>.
/// </summary>
public sealed class RunStart
{
    public required TrainingWorld World { get; init; }
    public required RunControls Controls { get; init; }
    public required CheckpointStore Store { get; init; }
    /// <summary>The checkpoint this attempt continues from; null for a fresh start.</summary>
    public CheckpointCheck? ResumeFrom { get; init; }
    /// <summary><see cref="ResumeFrom"/>'s trainer state (null exactly when ResumeFrom is).</summary>
    public TrainerState? State { get; init; }
    public required Stopwatch Wall { get; init; }
    public required DateTime StartUtc { get; init; }
    public ILogger Log => Controls.Log;

    /// <summary>
    /// Runs <paramref name="runOnce"/> until it returns an outcome. A resume reads the newest good-looking checkpoint's
    /// weights and optimizer state once, checking their checksums as they load (instead of hashing them first and
    /// reading them again; on several ranks each rank its own slice files). A mismatch is only found once the model and engine exist, so that attempt returns null
    /// after adding the checkpoint to the rejected set, and the run starts over skipping it exactly as if its up-front
    /// check had failed.
    /// </summary>
    public static TrainOutcome RunWithFallback(Func<RunAttempts, TrainOutcome?> runOnce)
    {
        var attempts = new RunAttempts();
        while (true)
            if (runOnce(attempts) is { } outcome) return outcome;
    }

    /// <summary>
    /// Sets threads and seed, opens the run folder and picks the checkpoint to continue from (skipping
    /// <paramref name="attempts"/>' rejected ones). <paramref name="checkResumable"/> may refuse a candidate checkpoint
    /// (e.g. one of another kind of run) by throwing <see cref="ConfigError"/>. <paramref name="filesVerifiedWhileLoading"/>:
    /// the files the engine checks as it loads them, left out of the up-front check (default: a one-process engine's
    /// weights and optimizer state on one process; nothing on several ranks).
    /// </summary>
    public static RunStart Open(string runDir, int threads, ulong seed, TrainingWorld world, RunControls controls,
        RunAttempts attempts, Action<string>? checkResumable = null, IReadOnlySet<string>? filesVerifiedWhileLoading = null)
    {
        var rejected = attempts.Rejected;
        var log = controls.Log;
        torch.set_num_threads(world.IsDistributed ? world.Threads(threads) : threads > 0 ? threads : Environment.ProcessorCount);
        torch.manual_seed(unchecked((long)seed));
        Directory.CreateDirectory(runDir);
        var store = new CheckpointStore(runDir, world.IsRoot ? log : Serilog.Core.Logger.None);
        // Only rank 0 removes leftovers: their owner's pid can only be checked on its own node.
        if (world.IsRoot) store.CleanTemporaries();

        CheckpointCheck? resumeFrom = null;
        TrainerState? state = null;
        var existing = store.List();
        if (controls.Resume)
        {
            // All ranks verify together (rank 0's candidate list, the hashing split across ranks) and agree on one step.
            // The engine's loader verifies the large files itself (see RunWithFallback).
            var hashedWhileLoading = filesVerifiedWhileLoading ?? (world.IsDistributed ? null : OptimizerCheckpoint.FilesVerifiedWhileLoading);
            resumeFrom = store.FindLatestGood(world, out var skipped, hashedWhileLoading, rejected);
            if (resumeFrom == null && existing.Count > 0 && world.IsRoot)
                log.Warning("Run folder {RunDir} has {Count} checkpoint folder(s) but none is complete; starting from scratch", runDir, existing.Count);
            if (resumeFrom != null)
            {
                checkResumable?.Invoke(resumeFrom.Dir);
                string statePath = Path.Combine(resumeFrom.Dir, CheckpointFiles.TrainerState);
                try { state = JsonSerializer.Deserialize(File.ReadAllText(statePath), TrainerStateJson.Default.TrainerState); }
                catch (JsonException e) { throw new InvalidDataException($"{statePath} is not a readable trainer state (line {e.LineNumber + 1}, {e.Path})", e); }
                if (state is null) throw new InvalidDataException($"{resumeFrom.Dir}: empty {CheckpointFiles.TrainerState}");
                log.Information("Resuming from {Checkpoint} (step {Step}, {Tokens:N0} tokens){Fallback}", resumeFrom.Dir, state.Step, state.Tokens,
                    skipped.Count > 0 ? $"; skipped {skipped.Count} newer incomplete checkpoint(s)" : "");
            }
        }
        else if (existing.Count > 0)
            throw new ConfigError($"{runDir} already has checkpoints; resume (default) or choose another run_dir");

        return new RunStart { World = world, Controls = controls, Store = store, ResumeFrom = resumeFrom, State = state, Wall = attempts.Wall, StartUtc = attempts.StartUtc };
    }

    /// <summary>
    /// Restores <see cref="ResumeFrom"/>'s engine state and RNG. False when the checkpoint failed its checksum while
    /// loading (on several ranks the engine reports it on every rank together): it is added to <paramref name="rejected"/>
    /// and the attempt must return null.
    /// </summary>
    public bool TryLoadState(ITrainStep engine, Dictionary<long, string> rejected)
    {
        var from = ResumeFrom ?? throw new InvalidOperationException("no checkpoint to resume from");
        try { engine.LoadState(from.Dir, State!.OptimizerSteps); }
        catch (CheckpointCorruptException e)
        {
            Log.Warning("Checkpoint {Checkpoint} is not usable: {Problem}; starting over from an older one", Path.GetFileName(from.Dir), e.Problem);
            rejected[from.Step] = e.Problem;
            return false;
        }
        RngCheckpoint.Restore(from.Dir);
        return true;
    }
}
