using MeLlama.Distributed;
using MeLlama.Model;
using MeLlama.TestSupport;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;
using MeLlama.Training.Planning;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;
using static MeLlama.Training.Tests.Sharded.TinyRun;

namespace MeLlama.Training.Tests.Sharded;

/// <summary>
/// The sharded engine started from a shape-only (meta) model: each rank fills only its master slices, from the
/// replayed random init or from an HF checkpoint's byte ranges, and gets exactly what a full-size model gives.
/// </summary>
public class FsdpMetaInitTests(ITestOutputHelper output)
{
    /// <summary>Per rank: every unit's master slice (and, when steps are run, the step losses).</summary>
    sealed record RankState(float[][] Masters, List<StepResult> Losses);

    static RankState[] Run(int world, ShardingStrategy strategy, Func<ICollectives, (LlamaForCausalLM Model, FsdpTrainStep Engine)> build, int steps)
    {
        var states = new RankState[world];
        InProcessRanks.Run(world, comm =>
        {
            var (model, engine) = build(comm);
            using var _ = model;
            using var __ = engine;
            Assert.Equal(strategy, engine.Strategy);
            var masters = engine.Units.Select(u => u.Master.data<float>().ToArray()).ToArray();
            var losses = new List<StepResult>();
            for (int s = 0; s < steps; s++)
            {
                using var scope = NewDisposeScope();
                losses.Add(engine.Step(RankBatch(s, comm.Rank, world), Lr(s)));
            }
            states[comm.Rank] = new RankState(masters, losses);
        });
        return states;
    }

    static void AssertSameMasters(RankState[] expected, RankState[] actual, string what)
    {
        for (int r = 0; r < expected.Length; r++)
        {
            Assert.Equal(expected[r].Masters.Length, actual[r].Masters.Length);
            for (int u = 0; u < expected[r].Masters.Length; u++)
                Assert.True(expected[r].Masters[u].SequenceEqual(actual[r].Masters[u]), $"{what}: rank {r} unit {u} masters differ");
        }
    }

    [Theory]
    [InlineData(2, "full_shard", true)]
    [InlineData(3, "full_shard", true)]
    [InlineData(2, "full_shard", false)]
    [InlineData(3, "shard_grad_op", false)]
    [InlineData(2, "no_shard", false)]
    public void MetaBuiltRandomInitEqualsFullBuiltBitForBit(int world, string strategyName, bool free)
    {
        const int steps = 3;
        var strategy = ShardingStrategies.Parse(strategyName);
        var full = Run(world, strategy, comm =>
        {
            var model = new LlamaForCausalLM(Tiny, seed: Seed);
            return (model, new FsdpTrainStep(model, comm, Options, strategy, free));
        }, steps);
        var meta = Run(world, strategy, comm =>
        {
            var model = new LlamaForCausalLM(Tiny, META, initialize: false);
            Assert.Equal(DeviceType.META, model.Device.type);
            var engine = new FsdpTrainStep(model, comm, Options, strategy, free, masters: MasterSources.RandomInit(Tiny, Seed, CPU), device: CPU);
            Assert.Equal(DeviceType.CPU, model.Device.type); // real (placeholder) tensors replaced the meta ones
            Assert.All(model.parameters(), p => Assert.Equal(DeviceType.CPU, p.device_type));
            return (model, engine);
        }, steps);
        AssertSameMasters(full, meta, $"{strategyName} on {world} ranks, random init");
        for (int r = 0; r < world; r++)
            for (int s = 0; s < steps; s++)
                Assert.Equal(full[r].Losses[s].Loss, meta[r].Losses[s].Loss); // and it trains identically

        // bf16 from meta: the masters are the fp32 init, not its bf16 rounding.
        var bf16 = Run(world, strategy, comm =>
        {
            var model = new LlamaForCausalLM(Tiny, META, ScalarType.BFloat16, initialize: false);
            var engine = new FsdpTrainStep(model, comm, Options, strategy, free, masters: MasterSources.RandomInit(Tiny, Seed, CPU), device: CPU);
            Assert.All(engine.Units, u => Assert.Equal(ScalarType.BFloat16, u.ComputeDtype));
            return (model, engine);
        }, steps: 1);
        AssertSameMasters(full, bf16, $"{strategyName} on {world} ranks, bf16 from meta vs fp32 full");
        Assert.True(double.IsFinite(bf16[0].Losses[0].Loss));
    }

    [SkippableTheory]
    [InlineData(2)]
    [InlineData(3)]
    public void MetaBuiltFromHfCheckpointEqualsFullBuilt(int world)
    {
        string dir = SharedData.Require(SharedData.TinyLlama);
        var config = HfCheckpoint.LoadConfig(dir);
        var full = Run(world, ShardingStrategy.FullShard, comm =>
        {
            var model = HfCheckpoint.LoadModel(dir);
            return (model, new FsdpTrainStep(model, comm, Options, ShardingStrategy.FullShard, freeAfterUse: true));
        }, steps: 1);
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            var meta = Run(world, ShardingStrategy.FullShard, comm =>
            {
                var model = new LlamaForCausalLM(config, META, dtype, initialize: false);
                var checkpoint = SafeTensorsCheckpoint.Open(dir);
                try { return (model, new FsdpTrainStep(model, comm, Options, ShardingStrategy.FullShard, freeAfterUse: true, masters: MasterSources.FromCheckpoint(checkpoint), device: CPU)); }
                finally { checkpoint.Dispose(); } // the source is only read while the engine is built
            }, steps: 1);
            AssertSameMasters(full, meta, $"HF tiny-llama on {world} ranks ({dtype} compute)");
            if (dtype == ScalarType.Float32) Assert.Equal(full[0].Losses[0].Loss, meta[0].Losses[0].Loss);
        }
    }

    /// <summary>
    /// Construction memory from meta: the model's parameters hold no storage (placeholders), a rank's masters are 1/N of
    /// the model (plus padding), and the random init's only full-size temporary is one parameter at a time, at most the
    /// largest unit; a full-size start holds the whole fp32 model (4 B × parameters) on every rank first.
    /// </summary>
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void MetaStartHoldsOneNthPlusOneParameterWhileBuilding(int world)
    {
        var config = LlamaConfig.Demo with
        {
            HiddenSize = 256, NumLayers = 6, NumHeads = 8, NumKvHeads = 4, IntermediateSize = 688, VocabSize = 8192,
            MaxPositionEmbeddings = 64, TieWordEmbeddings = false,
        };
        long parameters = config.ParameterCount();
        long fullModelBytes = 4 * parameters;
        long[] units = MemoryPlanner.UnitParameterCounts(config);
        long largestUnitBytes = 4 * units.Max();
        long slice = MemoryPlanner.ShardElements(config, world);
        var report = new string[world];
        InProcessRanks.Run(world, comm =>
        {
            using var scope = NewDisposeScope();
            using var model = new LlamaForCausalLM(config, META, initialize: false);
            Assert.All(model.parameters(), p => Assert.Equal(DeviceType.META, p.device_type)); // shapes only, no memory
            var source = MasterSources.RandomInit(config, Seed, CPU);
            using var engine = new FsdpTrainStep(model, comm, Options, ShardingStrategy.FullShard, freeAfterUse: true, masters: source, device: CPU);
            long parameterBytes = engine.ParameterStorageBytes;
            long masterBytes = engine.Units.Sum(u => u.Master.numel() * u.Master.ElementSize);
            long peak = masterBytes + source.PeakTemporaryBytes;
            report[comm.Rank] = $"rank {comm.Rank}/{world}: fp32 masters {masterBytes} B, largest temporary {source.PeakTemporaryBytes} B " +
                                $"→ construction peak ≤ {peak} B ({(double)peak / fullModelBytes:P1} of the {fullModelBytes} B full fp32 model; 1/N + largest unit = {fullModelBytes / world + largestUnitBytes} B); " +
                                $"parameter storage after construction {parameterBytes} B, sharded state {engine.ShardedStateBytes} B";
            Assert.Equal(0, parameterBytes); // placeholders until a unit is gathered
            Assert.Equal(4 * slice, masterBytes);
            Assert.InRange(masterBytes, fullModelBytes / world, fullModelBytes / world + 4L * units.Length);
            Assert.Equal(4L * config.VocabSize * config.HiddenSize, source.PeakTemporaryBytes); // the largest parameter: embedding / lm_head
            Assert.True(source.PeakTemporaryBytes <= largestUnitBytes);
            Assert.True(peak <= fullModelBytes / world + largestUnitBytes + 4L * units.Length, report[comm.Rank]);
            // The engine works from there: one step, and the gathered unit is the only full-size storage.
            engine.Step(RankBatch(0, comm.Rank, world), Lr(0));
            Assert.Equal(0, engine.ParameterStorageBytes);
        });
        foreach (var line in report) output.WriteLine(line);
    }
}
