using MeLlama.Training.Checkpointing;
using MeLlama.Training.Config;
using MeLlama.Training.Engine;
using MeLlama.Training.Loop;
using MeLlama.Training.Metrics;
using MeLlama.Training.Runtime;
using MeLlama.Training.Sources;

namespace MeLlama.Training.Tests;

/// <summary>Runs the trainer in-process and reads back what it wrote.</summary>
static class TrainerHarness
{
    /// <summary>Trains; <paramref name="stopAfter"/> requests a preemption-style stop once that step completes.</summary>
    public static TrainOutcome Train(TrainConfig config, long? stopAfter = null, Action<long>? afterStep = null, TimeSpan? timeLimit = null)
    {
        using var signals = new StopSignals();
        var trainer = new Trainer(config, new TrainerOptions
        {
            Data = new PreparedDataProvider(config.Data), Signals = signals, TimeLimit = timeLimit,
            AfterStep = step =>
            {
                afterStep?.Invoke(step);
                if (step == stopAfter) signals.Request("test");
            },
        });
        return trainer.Run();
    }

    /// <summary>Training loss by step from metrics.jsonl (as raw doubles: compared bit for bit).</summary>
    public static SortedDictionary<long, double> TrainLosses(string runDir) =>
        new(MetricsLog.Read(Path.Combine(runDir, "metrics.jsonl")).Where(r => r.Kind == "train").ToDictionary(r => r.Step, r => r.Loss!.Value));

    public static string ModelSha(string checkpointDir) =>
        Core.IO.AtomicFile.Sha256File(Path.Combine(checkpointDir, CheckpointFiles.Model));

    public static string OptimizerSha(string checkpointDir) =>
        Core.IO.AtomicFile.Sha256File(Path.Combine(checkpointDir, CheckpointFiles.Optimizer));
}
