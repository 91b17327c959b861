using MeLlama.Training.Checkpointing;
using MeLlama.Training.Loop;
using MeLlama.TestSupport;

namespace MeLlama.Training.Tests;

/// <summary>
/// Resume is exact: training N steps straight and training k steps, stopping, then resuming to N give
/// bit-identical per-step losses, weights and optimizer state.
/// </summary>
public sealed class ExactResumeTests
{
    const int Steps = 8;

    [Fact]
    public void StoppingAtAnyStepAndResumingReproducesTheStraightRunBitForBit()
    {
        using var tmp = new TempDir();
        var domains = TrainTestData.TwoDomains(tmp.Path);
        var straightConfig = TrainTestData.TinyRecipe(tmp["straight"], domains, Steps);
        var straight = TrainerHarness.Train(straightConfig);
        Assert.Equal(TrainEnd.Completed, straight.End);
        var straightLosses = TrainerHarness.TrainLosses(straightConfig.RunDir);
        Assert.Equal(Steps, straightLosses.Count);
        Assert.True(straightLosses[Steps] < straightLosses[1], $"loss should fall: {straightLosses[1]} → {straightLosses[Steps]}");

        foreach (int k in new[] { 1, 3, 6 })
        {
            var config = straightConfig with { RunDir = tmp[$"resumed-{k}"] };
            var first = TrainerHarness.Train(config, stopAfter: k);
            Assert.Equal(TrainEnd.Preempted, first.End);
            Assert.Equal(k, first.Step);
            Assert.Equal(75, first.ExitCode);
            var second = TrainerHarness.Train(config);
            Assert.Equal(TrainEnd.Completed, second.End);
            Assert.Equal(Steps, second.Step);

            var losses = TrainerHarness.TrainLosses(config.RunDir);
            Assert.Equal(straightLosses.Keys, losses.Keys);
            foreach (var (step, loss) in straightLosses)
                Assert.True(BitConverter.DoubleToInt64Bits(loss) == BitConverter.DoubleToInt64Bits(losses[step]), $"k={k}: step {step} loss {losses[step]:R} != straight {loss:R}");
            Assert.Equal(TrainerHarness.ModelSha(straight.Checkpoint!), TrainerHarness.ModelSha(second.Checkpoint!));
            Assert.Equal(TrainerHarness.OptimizerSha(straight.Checkpoint!), TrainerHarness.OptimizerSha(second.Checkpoint!));
        }
    }

    [Fact]
    public void AnAbruptStopMidRunResumesFromTheLastIntervalCheckpointAndStillMatches()
    {
        using var tmp = new TempDir();
        var domains = TrainTestData.TwoDomains(tmp.Path);
        var baseConfig = TrainTestData.TinyRecipe(tmp["straight"], domains, Steps) with { Checkpoint = new() { Interval = 3, KeepLast = 5 } };
        var straight = TrainerHarness.Train(baseConfig);

        // A crash after step 5 (no save of its own): the newest checkpoint is step 3; steps 4-5 are redone.
        var config = baseConfig with { RunDir = tmp["crashed"] };
        Assert.Throws<SimulatedCrash>(() => TrainerHarness.Train(config, afterStep: s => { if (s == 5) throw new SimulatedCrash(); }));
        Assert.Equal(3, new CheckpointStore(config.RunDir).FindLatestGood(out _)!.Step);
        var resumed = TrainerHarness.Train(config);
        Assert.Equal(TrainEnd.Completed, resumed.End);
        Assert.Equal(TrainerHarness.TrainLosses(baseConfig.RunDir), TrainerHarness.TrainLosses(config.RunDir));
        Assert.Equal(TrainerHarness.ModelSha(straight.Checkpoint!), TrainerHarness.ModelSha(resumed.Checkpoint!));
    }

    sealed class SimulatedCrash : Exception;
}
