using MeLlama.Model;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Training.Tests.Sharded;

/// <summary>The FSDP (full shard) engine against the single-process engine on the same global batch.</summary>
public class FsdpTrainStepTests
{
    const int Steps = 5;
    const int GlobalMicroBatches = 6; // divisible by 1, 2 and 3 ranks
    const int MicroBatchSize = 2;
    const int SeqLen = 16;
    const long Seed = 1234;

    static readonly LlamaConfig Tiny = LlamaConfig.Demo with
    {
        HiddenSize = 32, NumLayers = 2, NumHeads = 4, NumKvHeads = 2, IntermediateSize = 64, VocabSize = 64,
        MaxPositionEmbeddings = 64, TieWordEmbeddings = false,
    };

    static TrainStepOptions Options => new(Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, GradClip: 0.05, ActivationCheckpointing: true);

    static double Lr(int step) => 3e-3 * (step + 1);

    /// <summary>Global batch of step <paramref name="step"/>: micro-batches [MicroBatchSize, SeqLen + 1], tokens from a seeded generator.</summary>
    static Tensor[] GlobalBatch(int step)
    {
        var gen = new Generator((ulong)(Seed + 1000 * step));
        return Enumerable.Range(0, GlobalMicroBatches)
            .Select(_ => randint(0, Tiny.VocabSize, [MicroBatchSize, SeqLen + 1], dtype: ScalarType.Int64, generator: gen))
            .ToArray();
    }

    static (List<StepResult> Results, Dictionary<string, float[]> Weights) RunSingle()
    {
        using var scope = NewDisposeScope();
        using var model = new LlamaForCausalLM(Tiny, seed: Seed);
        using var engine = new SingleProcessTrainStep(model, Options);
        var results = new List<StepResult>();
        for (int s = 0; s < Steps; s++) results.Add(engine.Step(GlobalBatch(s), Lr(s)));
        var weights = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.data<float>().ToArray());
        return (results, weights);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void FullShardMatchesSingleProcessLossesAndWeights(int world)
    {
        var (expected, expectedWeights) = RunSingle();
        var results = new List<StepResult>[world];
        var weights = new Dictionary<string, float[]>[world];
        InProcessRanks.Run(world, comm =>
        {
            using var model = new LlamaForCausalLM(Tiny, seed: Seed);
            using var engine = new FsdpTrainStep(model, comm, Options);
            var mine = new List<StepResult>();
            int perRank = GlobalMicroBatches / world;
            for (int s = 0; s < Steps; s++)
                mine.Add(engine.Step(GlobalBatch(s).Skip(comm.Rank * perRank).Take(perRank).ToList(), Lr(s)));
            foreach (var u in engine.Units) u.Gather(); // the full parameters as the shards now say
            results[comm.Rank] = mine;
            weights[comm.Rank] = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.data<float>().ToArray());
        });
        for (int r = 0; r < world; r++)
        {
            for (int s = 0; s < Steps; s++)
            {
                Assert.False(results[r][s].Skipped);
                Assert.Equal(expected[s].Tokens, results[r][s].Tokens);
                Assert.True(Math.Abs(results[r][s].Loss - expected[s].Loss) <= 1e-5 * Math.Abs(expected[s].Loss),
                    $"rank {r} step {s}: loss {results[r][s].Loss} vs single-process {expected[s].Loss}");
                Assert.True(Math.Abs(results[r][s].GradNorm - expected[s].GradNorm) <= 1e-4 * expected[s].GradNorm,
                    $"rank {r} step {s}: grad norm {results[r][s].GradNorm} vs single-process {expected[s].GradNorm}");
            }
            foreach (var (name, w) in expectedWeights)
            {
                double maxDiff = w.Zip(weights[r][name], (a, b) => Math.Abs(a - b)).Max();
                Assert.True(maxDiff < 1e-5, $"rank {r} {name}: max |Δ| {maxDiff}");
            }
        }
        Assert.True(expected.Any(r => r.GradNorm > Options.GradClip), "the run should exercise clipping; grad norms " + string.Join(", ", expected.Select(r => r.GradNorm)));
    }

    [Fact]
    public void ShardedStateIsOneThirdOfSingleProcessOnThreeRanks()
    {
        const int world = 3;
        long parameterCount = Tiny.ParameterCount();
        long singleBytes = 4L * sizeof(float) * parameterCount; // weights + gradients + exp_avg + exp_avg_sq, fp32
        var bytes = new long[world];
        var leftoverGrads = new int[world];
        InProcessRanks.Run(world, comm =>
        {
            using var model = new LlamaForCausalLM(Tiny, seed: Seed);
            using var engine = new FsdpTrainStep(model, comm, Options);
            int perRank = GlobalMicroBatches / world;
            engine.Step(GlobalBatch(0).Skip(comm.Rank * perRank).Take(perRank).ToList(), Lr(0));
            // Counted from the tensors themselves, not from the layout arithmetic.
            bytes[comm.Rank] = engine.Units.Sum(u => new[] { u.Master, u.Grad, u.ExpAvg, u.ExpAvgSq }.Sum(t => t.numel() * t.ElementSize));
            leftoverGrads[comm.Rank] = model.parameters().Count(p => p.grad is not null);
            Assert.Equal(engine.ShardedStateBytes, bytes[comm.Rank]);
        });
        int units = Tiny.NumLayers + 2;
        foreach (var b in bytes)
        {
            Assert.InRange(b, singleBytes / world, singleBytes / world + 4L * sizeof(float) * units * world);
        }
        Assert.All(leftoverGrads, n => Assert.Equal(0, n)); // full-size gradients were dropped after reduce-scatter
    }
}
