using MeLlama.Model;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;
using static TorchSharp.torch;
using Xunit.Abstractions;
using static MeLlama.Training.Tests.Sharded.TinyRun;

namespace MeLlama.Training.Tests.Sharded;

/// <summary>The FSDP engine (every strategy) against the single-process engine on the same global batch.</summary>
public class FsdpTrainStepTests(ITestOutputHelper output)
{
    const int Steps = 10;

    [Theory]
    [MemberData(nameof(StrategyCases), MemberType = typeof(TinyRun))]
    public void StrategyMatchesSingleProcessLossesAndWeights(int world, string strategyName, bool freeAfterUse, bool prefetch)
    {
        var strategy = ShardingStrategies.Parse(strategyName);
        var (expected, expectedWeights) = RunSingle(0, Steps);
        var (results, weights) = RunRanks(world, Steps, comm =>
        {
            // No-shard ranks start from different random weights, to check that rank 0's are broadcast (as DDP
            // does); the sharded strategies take each slice from its owner's model, so their ranks share the init.
            long seed = strategy == ShardingStrategy.NoShard ? Seed + comm.Rank : Seed;
            var model = new LlamaForCausalLM(Tiny, seed: seed);
            var engine = new FsdpTrainStep(model, comm, Options, strategy, freeAfterUse, prefetch);
            Assert.Equal(strategy, engine.Strategy);
            Assert.Equal(prefetch, engine.Prefetch);
            return (model, engine);
        }, (s, rank) => RankBatch(s, rank, world));
        for (int r = 0; r < world; r++)
        {
            AssertLossesMatch(expected, results[r], $"{strategyName} rank {r} of {world}");
            AssertWeightsMatch(expectedWeights, weights[r], $"rank {r}");
        }
        Assert.True(expected.Any(r => r.GradNorm > Options.GradClip), "the run should exercise clipping; grad norms " + string.Join(", ", expected.Select(r => r.GradNorm)));
    }

    /// <summary>
    /// libtorch's fused AdamW (what a GPU run uses) over each rank's owned segments, split by decay group, with the
    /// clipping factor passed as the kernel's gradient scale: equal to the single-process CPU update. Three ranks
    /// put slice boundaries inside parameters.
    /// </summary>
    [Theory]
    [InlineData(3, "full_shard")]
    [InlineData(2, "no_shard")]
    public void FusedAdamWOverOwnedSegmentsMatchesSingleProcess(int world, string strategyName)
    {
        var strategy = ShardingStrategies.Parse(strategyName);
        var (expected, expectedWeights) = RunSingle(0, Steps);
        var options = Options with { Kernel = MeLlama.Training.Optim.AdamWKernel.TorchFused };
        var (results, weights) = RunRanks(world, Steps, comm =>
        {
            var model = new LlamaForCausalLM(Tiny, seed: Seed);
            return (model, new FsdpTrainStep(model, comm, options, strategy));
        }, (s, rank) => RankBatch(s, rank, world));
        for (int r = 0; r < world; r++)
        {
            AssertLossesMatch(expected, results[r], $"fused {strategyName} rank {r} of {world}");
            AssertWeightsMatch(expectedWeights, weights[r], $"fused, rank {r}");
        }
    }

    [Theory]
    [InlineData("full_shard", ShardingStrategy.FullShard)]
    [InlineData("FULL_SHARD", ShardingStrategy.FullShard)]
    [InlineData("shard_grad_op", ShardingStrategy.ShardGradOp)]
    [InlineData("no-shard", ShardingStrategy.NoShard)]
    public void ParsesTorchFsdpNames(string text, ShardingStrategy expected)
    {
        Assert.Equal(expected, ShardingStrategies.Parse(text));
        Assert.Equal(expected, ShardingStrategies.Parse(expected.ToName()));
    }

    [Fact]
    public void UnknownStrategyNameIsRejected()
    {
        var e = Assert.Throws<FormatException>(() => ShardingStrategies.Parse("hybrid_shard"));
        Assert.Contains("hybrid_shard", e.Message);
    }

    /// <summary>
    /// Per-rank bytes of parameters + gradients + optimizer state at rest (between steps), summed from the storage
    /// the tensors actually point at, against the single-process figure (4 fp32 copies of every parameter).
    /// </summary>
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void FreeAfterUseHoldsAboutOneNthOfSingleProcessState(int world)
    {
        long parameterCount = Tiny.ParameterCount();
        long singleBytes;
        using (var scope = NewDisposeScope())
        {
            // Single process after a step: fp32 weights, their gradients, exp_avg and exp_avg_sq, counted from the tensors.
            using var model = new LlamaForCausalLM(Tiny, seed: Seed);
            using var engine = new SingleProcessTrainStep(model, Options);
            engine.Step(RankBatch(0, 0, 1), Lr(0));
            singleBytes = model.parameters().Sum(p => p.numel() * p.ElementSize + (p.grad is { } g ? g.numel() * g.ElementSize : 0))
                + engine.OptimizerStateTensors().Sum(t => t.Tensor.numel() * t.Tensor.ElementSize);
        }
        Assert.Equal(4L * sizeof(float) * parameterCount, singleBytes);
        var freed = new long[world];
        var kept = new long[world];
        InProcessRanks.Run(world, comm =>
        {
            long Measure(LlamaForCausalLM model, FsdpTrainStep engine)
            {
                long state = engine.Units.Sum(u => new[] { u.Master, u.Grad, u.ExpAvg, u.ExpAvgSq }.Sum(t => t.numel() * t.ElementSize));
                long grads = model.parameters().Sum(p => p.grad is { } g ? g.numel() * g.ElementSize : 0);
                return state + grads + engine.ParameterStorageBytes;
            }
            foreach (bool free in new[] { true, false })
            {
                using var scope = NewDisposeScope();
                using var model = new LlamaForCausalLM(Tiny, seed: Seed);
                // Default prefetch: on with freeAfterUse, so the at-rest figure below also covers the prefetching path.
                using var engine = new FsdpTrainStep(model, comm, Options, ShardingStrategy.FullShard, freeAfterUse: free);
                Assert.Equal(free, engine.Prefetch);
                for (int s = 0; s < 2; s++)
                {
                    using var stepScope = NewDisposeScope();
                    engine.Step(RankBatch(s, comm.Rank, world), Lr(s));
                }
                if (free)
                {
                    Assert.All(model.parameters(), p => Assert.Equal(0, p.numel()));
                    engine.Units[1].Gather(); // while a unit is in use its parameters view one gathered (padded) buffer
                    Assert.Equal(engine.Units[1].Layout.PaddedNumel * sizeof(float), engine.ParameterStorageBytes);
                    engine.Units[1].Release();
                    freed[comm.Rank] = Measure(model, engine);
                    // Still usable after the release: evaluation gathers and releases again.
                    using var evalScope = NewDisposeScope();
                    Assert.True(double.IsFinite(engine.Evaluate(RankBatch(0, comm.Rank, world)[0]).MeanLoss));
                    Assert.Equal(0, engine.ParameterStorageBytes);
                }
                else kept[comm.Rank] = Measure(model, engine);
            }
        });
        output.WriteLine($"single process: {singleBytes} B; {world} ranks, free after use: {string.Join(", ", freed)} B; keeping full-size parameters: {string.Join(", ", kept)} B");
        int units = Tiny.NumLayers + 2;
        long paddingSlack = 4L * sizeof(float) * units * world;
        for (int r = 0; r < world; r++)
        {
            Assert.InRange(freed[r], singleBytes / world, singleBytes / world + paddingSlack);
            // Without freeing, the full-size parameters stay: 1/N of three copies plus one whole copy.
            Assert.InRange(kept[r], singleBytes / world + 4L * parameterCount, singleBytes / world + 4L * parameterCount + paddingSlack);
        }
    }
}
