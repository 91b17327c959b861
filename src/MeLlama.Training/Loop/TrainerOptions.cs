using MeLlama.Training.Runtime;
using MeLlama.Training.Sources;
using Serilog;

namespace MeLlama.Training.Loop;

/// <summary>How one invocation runs (as opposed to what is trained, which is the <see cref="Config.TrainConfig"/>).</summary>
public sealed record TrainerOptions
{
    public required IDataProvider Data { get; init; }
    public ILogger Log { get; init; } = Serilog.Core.Logger.None;
    /// <summary>Continue from the run folder's newest good checkpoint (default). False: refuse to start when one exists.</summary>
    public bool Resume { get; init; } = true;
    /// <summary>Wall-clock budget for this invocation; the run saves and exits with 75 before it runs out.</summary>
    public TimeSpan? TimeLimit { get; init; }
    /// <summary>Preemption signals (null: none are caught, e.g. in library use).</summary>
    public StopSignals? Signals { get; init; }
    /// <summary>Draw the live progress line (interactive terminals).</summary>
    public bool Progress { get; init; }
    /// <summary>Tokenizer vocabulary size (random init without an explicit vocab_size).</summary>
    public int? TokenizerVocab { get; init; }
    /// <summary>
    /// The ranks this run is spread over (null: one process). The data provider must already be opened for this rank's
    /// partition (e.g. <c>new PreparedDataProvider(data, world.Rank, world.Size)</c>).
    /// </summary>
    public TrainingWorld? World { get; init; }
    /// <summary>Test hook: called after each completed optimizer step with the step number.</summary>
    public Action<long>? AfterStep { get; init; }
}

/// <summary>How a run ended.</summary>
public enum TrainEnd { Completed, Preempted, TimeLimit, Diverged }

/// <summary>Result of <see cref="Trainer.Run"/>.</summary>
public sealed record TrainOutcome(TrainEnd End, long Step, long Tokens, string? Checkpoint, IReadOnlyDictionary<string, double> FirstEval, IReadOnlyDictionary<string, double> LastEval, string Message)
{
    public int ExitCode => End switch
    {
        TrainEnd.Completed => ExitCodes.Completed,
        TrainEnd.Preempted or TrainEnd.TimeLimit => ExitCodes.Preempted,
        _ => ExitCodes.Failed,
    };
}
