using MeLlama.Model;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Config;
using MeLlama.Training.Engine;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Training.Tests.Sharded;

/// <summary>The tiny model, optimizer settings and seeded global batches shared by the sharded-engine tests.</summary>
static class TinyRun
{
    public const int GlobalMicroBatches = 6; // divisible by 1, 2 and 3 ranks
    public const int MicroBatchSize = 2;
    public const int SeqLen = 16;
    public const long Seed = 1234;

    public static readonly LlamaConfig Tiny = LlamaConfig.Demo with
    {
        HiddenSize = 32, NumLayers = 2, NumHeads = 4, NumKvHeads = 2, IntermediateSize = 64, VocabSize = 64,
        MaxPositionEmbeddings = 64, TieWordEmbeddings = false,
    };

    /// <summary><see cref="Tiny"/> with the output head tied to the embedding (as the demo recipe trains).</summary>
    public static readonly LlamaConfig TinyTied = Tiny with { TieWordEmbeddings = true };

    public static TrainStepOptions Options => new(Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, GradClip: 0.05, ActivationCheckpointing: true);

    public static double Lr(int step) => 3e-3 * (step % 5 + 1);

    /// <summary>Global batch of step <paramref name="step"/>: micro-batches [MicroBatchSize, SeqLen + 1], tokens from a seeded generator.</summary>
    public static Tensor[] GlobalBatch(int step)
    {
        var gen = new Generator((ulong)(Seed + 1000 * step));
        return Enumerable.Range(0, GlobalMicroBatches)
            .Select(_ => randint(0, Tiny.VocabSize, [MicroBatchSize, SeqLen + 1], dtype: ScalarType.Int64, generator: gen))
            .ToArray();
    }

    /// <summary>Rank <paramref name="rank"/>'s share of step <paramref name="step"/>'s global batch.</summary>
    public static List<Tensor> RankBatch(int step, int rank, int world)
    {
        int perRank = GlobalMicroBatches / world;
        return GlobalBatch(step).Skip(rank * perRank).Take(perRank).ToList();
    }

    /// <summary>Steps [from, to) of the single-process engine, from the seeded init or from <paramref name="stateDir"/>.</summary>
    public static (List<StepResult> Results, Dictionary<string, float[]> Weights) RunSingle(int from, int to, string? stateDir = null, long seed = Seed,
        LlamaConfig? config = null)
    {
        using var scope = NewDisposeScope();
        using var model = new LlamaForCausalLM(config ?? Tiny, seed: seed);
        using var engine = new SingleProcessTrainStep(model, Options);
        if (stateDir != null) engine.LoadState(stateDir, from);
        var results = new List<StepResult>();
        for (int s = from; s < to; s++)
        {
            using var stepScope = NewDisposeScope();
            results.Add(engine.Step(GlobalBatch(s), Lr(s)));
        }
        return (results, Weights(model));
    }

    /// <summary>A checkpoint folder as the trainer lays it out (configs + engine files + manifest), for the exporter.</summary>
    public static string WriteCheckpoint(string runDir, long step, LlamaConfig config, Action<string> writeEngineFiles)
    {
        var train = ConfigLoader.Load("demo");
        train.Model.Tokenizer = null;
        train.Model.InitFrom = null;
        return new CheckpointStore(runDir).Save(step, dir =>
        {
            writeEngineFiles(dir);
            File.WriteAllText(Path.Combine(dir, CheckpointFiles.ModelConfig), config.ToHfJson("float32"));
            File.WriteAllText(Path.Combine(dir, CheckpointFiles.Config), ConfigLoader.ToJson(train));
        });
    }

    /// <summary><see cref="WriteCheckpoint"/> of the single-process engine after steps [0, steps) from the seeded init.</summary>
    public static string WriteSingleProcessCheckpoint(string runDir, int steps, LlamaConfig config) =>
        WriteCheckpoint(runDir, steps, config, dir =>
        {
            using var model = new LlamaForCausalLM(config, seed: Seed);
            using var engine = new SingleProcessTrainStep(model, Options);
            for (int s = 0; s < steps; s++)
            {
                using var scope = NewDisposeScope();
                engine.Step(GlobalBatch(s), Lr(s));
            }
            engine.SaveState(dir);
        });

    /// <summary>Every strategy case the equivalence tests run: world size, strategy, freeAfterUse, prefetch.</summary>
    public static TheoryData<int, string, bool, bool> StrategyCases => new()
    {
        { 2, "full_shard", false, false }, { 3, "full_shard", false, false },
        { 2, "full_shard", true, false }, { 3, "full_shard", true, false },
        { 2, "full_shard", true, true }, { 3, "full_shard", true, true },
        { 2, "shard_grad_op", false, false }, { 3, "shard_grad_op", false, false },
        { 2, "no_shard", false, false }, { 3, "no_shard", false, false },
    };

    /// <summary>
    /// <paramref name="steps"/> steps of the engine <paramref name="build"/> makes on each of <paramref name="world"/>
    /// in-process ranks (rank r trains on <paramref name="batch"/>(step, r)); each rank's step results and, after the
    /// run, its full weights (full_shard gathers its units first).
    /// </summary>
    public static (List<StepResult>[] Results, Dictionary<string, float[]>[] Weights) RunRanks(int world, int steps,
        Func<MeLlama.Distributed.ICollectives, (LlamaForCausalLM Model, Engine.Sharded.FsdpTrainStep Engine)> build, Func<int, int, IReadOnlyList<Tensor>> batch)
    {
        var results = new List<StepResult>[world];
        var weights = new Dictionary<string, float[]>[world];
        InProcessRanks.Run(world, comm =>
        {
            var (model, engine) = build(comm);
            using (model)
            using (engine)
            {
                var mine = new List<StepResult>();
                for (int s = 0; s < steps; s++)
                {
                    using var scope = NewDisposeScope();
                    mine.Add(engine.Step(batch(s, comm.Rank), Lr(s)));
                }
                if (engine.Strategy == Engine.Sharded.ShardingStrategy.FullShard)
                    foreach (var u in engine.Units) u.Gather(); // the full parameters as the shards now say
                results[comm.Rank] = mine;
                weights[comm.Rank] = Weights(model);
            }
        });
        return (results, weights);
    }

    public static Dictionary<string, float[]> Weights(LlamaForCausalLM model) =>
        model.named_parameters().ToDictionary(p => p.name, p => p.parameter.data<float>().ToArray());

    /// <summary>Every expected weight tensor within 1e-5 (max absolute elementwise difference) of <paramref name="actual"/>'s.</summary>
    public static void AssertWeightsMatch(Dictionary<string, float[]> expected, Dictionary<string, float[]> actual, string what)
    {
        foreach (var (name, w) in expected)
        {
            double maxDiff = w.Zip(actual[name], (a, b) => Math.Abs(a - b)).Max();
            Assert.True(maxDiff < 1e-5, $"{what} {name}: max |Δ| {maxDiff}");
        }
    }

    public static void AssertLossesMatch(IReadOnlyList<StepResult> expected, IReadOnlyList<StepResult> actual, string what)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (int s = 0; s < expected.Count; s++)
        {
            Assert.False(actual[s].Skipped, $"{what} step {s} was skipped");
            Assert.Equal(expected[s].Tokens, actual[s].Tokens);
            Assert.True(Math.Abs(actual[s].Loss - expected[s].Loss) <= 1e-5 * Math.Abs(expected[s].Loss),
                $"{what} step {s}: loss {actual[s].Loss:R} vs expected {expected[s].Loss:R}");
            Assert.True(Math.Abs(actual[s].GradNorm - expected[s].GradNorm) <= 1e-4 * expected[s].GradNorm,
                $"{what} step {s}: grad norm {actual[s].GradNorm:R} vs expected {expected[s].GradNorm:R}");
        }
    }
}
