using System.Collections.Concurrent;
using MeLlama.Distributed;
using MeLlama.Model;
using MeLlama.TestSupport;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;
using Xunit.Abstractions;
using TorchSharp;
using static TorchSharp.torch;
using static MeLlama.Training.Tests.Sharded.TinyRun;

namespace MeLlama.Training.Tests.Sharded;

/// <summary>
/// bf16 compute under the FSDP engine: bf16 parameters gathered in bf16, fp32 gradients reduce-scattered into fp32
/// slices, fp32 masters and moments, against the single-process engine's bf16 scheme (MasterAdamW main_grad).
/// </summary>
public class FsdpBf16Tests(ITestOutputHelper output)
{
    const int Steps = 8;

    /// <summary>
    /// Step s trains on the global batch of step s % 2: random tokens that repeat, so the tiny model memorises them
    /// and the loss moves (on fresh random tokens it stays at ln V whatever the precision, and a loss check would
    /// not tell bf16 from fp32).
    /// </summary>
    static Tensor[] Global(int step) => GlobalBatch(step % 2);
    static List<Tensor> Ranked(int step, int rank, int world) => RankBatch(step % 2, rank, world);

    // Tolerances between two correct bf16 runs that differ in reduction order and loss scaling (the sharded engine
    // back-propagates token-summed NLL / global tokens, the single-process one per-micro-batch means / micro-batches,
    // so their bf16 gradients round differently). Measured over 8 steps on 2 and 3 ranks, every strategy: max relative
    // loss gap 1.8e-5, max |Δ master| 3.1e-4. Precision mistakes, measured the same way (TolerancesRejectPrecisionMistakes):
    // fp32 compute 2.4e-4 / 2.0e-2, fp16 compute 3.5e-4 / 2.0e-2, bf16-rounded masters 8.4e-5 / 1.6e-2. The master
    // tolerance sits 6x above the measured gap and 8x below the smallest mistake; the loss one 5x above.
    const double LossTolerance = 1e-4;
    const double MasterTolerance = 2e-3;

    /// <summary>A bf16 model as <c>ModelFactory.RandomInit</c> builds it: the fp32 init, cast.</summary>
    static LlamaForCausalLM Bf16Model(long seed = Seed)
    {
        var model = new LlamaForCausalLM(Tiny, seed: seed);
        model.to(ScalarType.BFloat16);
        return model;
    }

    /// <summary>Single-process run in <paramref name="dtype"/> with fp32 masters from the fp32 init (as the trainer sets them up); losses and fp32 masters.</summary>
    static (List<StepResult> Results, Dictionary<string, float[]> Masters) RunSingle(ScalarType dtype, bool roundedMasters = false)
    {
        using var scope = NewDisposeScope();
        using var tmp = new TempDir();
        using var model = new LlamaForCausalLM(Tiny, seed: Seed);
        if (dtype != ScalarType.Float32) model.to(dtype);
        using var engine = new SingleProcessTrainStep(model, Options);
        if (dtype != ScalarType.Float32 && !roundedMasters)
        {
            using var fp32 = new LlamaForCausalLM(Tiny, seed: Seed);
            var reference = fp32.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
            engine.LoadMasterWeights(name => reference[name].alias());
        }
        var results = new List<StepResult>();
        for (int s = 0; s < Steps; s++)
        {
            using var stepScope = NewDisposeScope();
            results.Add(engine.Step(Global(s), Lr(s)));
        }
        engine.SaveState(tmp.Path);
        using var reader = SafeTensorsReader.Open(Path.Combine(tmp.Path, CheckpointFiles.Model));
        var masters = reader.Entries.Keys.ToDictionary(n => n, n => reader.ReadTensor(n, ScalarType.Float32).data<float>().ToArray());
        return (results, masters);
    }

    static double RelativeLossGap(IReadOnlyList<StepResult> a, IReadOnlyList<StepResult> b) =>
        a.Zip(b, (x, y) => Math.Abs(x.Loss - y.Loss) / Math.Abs(x.Loss)).Max();

    static double MeanMasterGap(Dictionary<string, float[]> a, Dictionary<string, float[]> b) =>
        a.Sum(kv => kv.Value.Zip(b[kv.Key], (x, y) => (double)Math.Abs(x - y)).Sum()) / a.Sum(kv => kv.Value.Length);

    static double MaxMasterGap(Dictionary<string, float[]> a, Dictionary<string, float[]> b)
    {
        Assert.Equal(a.Keys.Order(StringComparer.Ordinal), b.Keys.Order(StringComparer.Ordinal));
        return a.Max(kv => kv.Value.Zip(b[kv.Key], (x, y) => (double)Math.Abs(x - y)).Max());
    }

    /// <summary>Runs <see cref="Steps"/> bf16 steps on <paramref name="world"/> ranks; rank 0's results and the consolidated fp32 masters.</summary>
    static (List<StepResult> Results, Dictionary<string, float[]> Masters) RunSharded(int world, ShardingStrategy strategy, bool free, string? saveDir = null, int steps = Steps)
    {
        using var tmp = new TempDir();
        string dir = saveDir ?? tmp.Path;
        var results = new List<StepResult>[world];
        InProcessRanks.Run(world, comm =>
        {
            using var model = Bf16Model();
            // The masters come from the fp32 init (the bf16 model's values are already rounded).
            using var engine = new FsdpTrainStep(model, comm, Options, strategy, free, masters: MasterSources.RandomInit(Tiny, Seed, CPU));
            Assert.All(engine.Units, u => Assert.Equal(ScalarType.BFloat16, u.ComputeDtype));
            Assert.All(engine.Units, u => Assert.Equal(ScalarType.Float32, u.Master.dtype));
            var mine = new List<StepResult>();
            for (int s = 0; s < steps; s++)
            {
                using var scope = NewDisposeScope();
                mine.Add(engine.Step(Ranked(s, comm.Rank, world), Lr(s)));
            }
            engine.SaveState(dir);
            results[comm.Rank] = mine;
        });
        for (int r = 1; r < world; r++) AssertLossesMatch(results[0], results[r], $"bf16 rank {r} vs rank 0");
        var masters = ShardedCheckpoint.ReadConsolidated(dir).ToDictionary(t => t.Name, t => t.Tensor.data<float>().ToArray());
        return (results[0], masters);
    }

    [Theory]
    [InlineData(2, "full_shard", true)]
    [InlineData(3, "full_shard", true)]
    [InlineData(2, "full_shard", false)]
    [InlineData(2, "shard_grad_op", false)]
    [InlineData(3, "shard_grad_op", false)]
    [InlineData(2, "no_shard", false)]
    [InlineData(3, "no_shard", false)]
    public void Bf16MatchesSingleProcessBf16(int world, string strategyName, bool freeAfterUse)
    {
        var (expected, expectedMasters) = SingleBf16.Value;
        var (actual, masters) = RunSharded(world, ShardingStrategies.Parse(strategyName), freeAfterUse);
        double lossGap = RelativeLossGap(expected, actual), masterGap = MaxMasterGap(expectedMasters, masters);
        output.WriteLine($"{strategyName} on {world} ranks, bf16 vs single-process bf16: max relative loss gap {lossGap:E2}, " +
                         $"max |Δ master| {masterGap:E2}, mean |Δ master| {MeanMasterGap(expectedMasters, masters):E2}");
        foreach (var (what, (results, m)) in Wrong.Value)
            output.WriteLine($"  for scale, single process {what} vs bf16: max relative loss gap {RelativeLossGap(expected, results):E2}, " +
                             $"max |Δ master| {MaxMasterGap(expectedMasters, m):E2}, mean |Δ master| {MeanMasterGap(expectedMasters, m):E2}");
        output.WriteLine("losses single bf16: " + string.Join(", ", expected.Select(r => r.Loss.ToString("F6"))));
        output.WriteLine("losses fsdp bf16:   " + string.Join(", ", actual.Select(r => r.Loss.ToString("F6"))));
        Assert.All(actual, r => Assert.False(r.Skipped));
        Assert.Equal(expected.Select(r => r.Tokens), actual.Select(r => r.Tokens));
        Assert.True(lossGap <= LossTolerance, $"loss gap {lossGap:E2} > {LossTolerance:E0}");
        Assert.True(masterGap <= MasterTolerance, $"master gap {masterGap:E2} > {MasterTolerance:E0}");
    }

    static readonly Lazy<(List<StepResult>, Dictionary<string, float[]>)> SingleBf16 = new(() => RunSingle(ScalarType.BFloat16));

    /// <summary>Single-process runs with a precision mistake: what the tolerances must reject.</summary>
    static readonly Lazy<Dictionary<string, (List<StepResult>, Dictionary<string, float[]>)>> Wrong = new(() => new()
    {
        ["fp32 compute"] = RunSingle(ScalarType.Float32),
        ["fp16 compute"] = RunSingle(ScalarType.Float16),
        ["bf16 with bf16-rounded masters"] = RunSingle(ScalarType.BFloat16, roundedMasters: true),
    });

    /// <summary>The tolerances of <see cref="Bf16MatchesSingleProcessBf16"/> reject each precision mistake.</summary>
    [Fact]
    public void TolerancesRejectPrecisionMistakes()
    {
        var (expected, expectedMasters) = SingleBf16.Value;
        foreach (var (what, (results, masters)) in Wrong.Value)
        {
            double lossGap = RelativeLossGap(expected, results), masterGap = MaxMasterGap(expectedMasters, masters);
            output.WriteLine($"{what} vs bf16: max relative loss gap {lossGap:E2}, max |Δ master| {masterGap:E2}");
            Assert.True(lossGap > LossTolerance || masterGap > MasterTolerance, $"{what} passes for bf16 (loss gap {lossGap:E2}, master gap {masterGap:E2})");
        }
    }

    /// <summary>Records dtype and bytes of every all-gather and reduce-scatter, then delegates.</summary>
    sealed class RecordingCollectives(ICollectives inner) : ICollectives
    {
        public ConcurrentQueue<(string Op, ScalarType Dtype, long Bytes)> Calls { get; } = new();
        public int Rank => inner.Rank;
        public int WorldSize => inner.WorldSize;
        public string Backend => inner.Backend;
        public TimeSpan Timeout => inner.Timeout;

        public void AllGather(Tensor input, Tensor output, TimeSpan? timeout = null)
        {
            Assert.Equal(input.dtype, output.dtype);
            Calls.Enqueue(("all_gather", output.dtype, output.numel() * output.ElementSize));
            inner.AllGather(input, output, timeout);
        }

        public void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum, TimeSpan? timeout = null)
        {
            Assert.Equal(input.dtype, output.dtype);
            Calls.Enqueue(("reduce_scatter", input.dtype, input.numel() * input.ElementSize));
            inner.ReduceScatter(input, output, op, timeout);
        }

        public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum, TimeSpan? timeout = null) => inner.AllReduce(tensor, op, timeout);
        public void Broadcast(Tensor tensor, int root = 0, TimeSpan? timeout = null) => inner.Broadcast(tensor, root, timeout);
        public void Barrier(TimeSpan? timeout = null) => inner.Barrier(timeout);
        public void Abort(string reason) => inner.Abort(reason);
        public void Dispose() { }
    }

    [Theory]
    [InlineData("full_shard", true)]
    [InlineData("shard_grad_op", false)]
    public void GathersMoveBf16AndReduceScattersMoveFp32(string strategyName, bool free)
    {
        const int world = 2;
        var strategy = ShardingStrategies.Parse(strategyName);
        var calls = new Dictionary<ScalarType, List<(string Op, ScalarType Dtype, long Bytes)>>();
        long[] padded = [];
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            var rank0 = new List<(string, ScalarType, long)>();
            InProcessRanks.Run(world, inner =>
            {
                var comm = new RecordingCollectives(inner);
                using var model = new LlamaForCausalLM(Tiny, seed: Seed);
                if (dtype != ScalarType.Float32) model.to(dtype);
                using var engine = new FsdpTrainStep(model, comm, Options, strategy, free);
                using var scope = NewDisposeScope();
                engine.Step(RankBatch(0, comm.Rank, world), Lr(0));
                if (comm.Rank == 0)
                {
                    rank0.AddRange(comm.Calls);
                    padded = engine.Units.Select(u => u.Layout.PaddedNumel).ToArray();
                }
            });
            calls[dtype] = rank0;
        }
        foreach (var (dtype, list) in calls)
        {
            var gathers = list.Where(c => c.Op == "all_gather").ToList();
            var scatters = list.Where(c => c.Op == "reduce_scatter").ToList();
            Assert.NotEmpty(gathers);
            Assert.NotEmpty(scatters);
            Assert.All(gathers, g => Assert.Equal(dtype, g.Dtype));
            Assert.All(scatters, s => Assert.Equal(ScalarType.Float32, s.Dtype)); // gradients are reduced in fp32 whatever the compute dtype
            Assert.All(gathers, g => Assert.Contains(g.Bytes / (dtype == ScalarType.Float32 ? 4 : 2), padded));
            output.WriteLine($"{strategyName} {dtype}: {gathers.Count} all-gathers, {gathers.Sum(g => g.Bytes)} B; {scatters.Count} reduce-scatters, {scatters.Sum(s => s.Bytes)} B");
        }
        var fp32 = calls[ScalarType.Float32];
        var bf16 = calls[ScalarType.BFloat16];
        Assert.Equal(fp32.Select(c => c.Op), bf16.Select(c => c.Op)); // the same collectives in the same order
        Assert.Equal(fp32.Where(c => c.Op == "all_gather").Sum(c => c.Bytes), 2 * bf16.Where(c => c.Op == "all_gather").Sum(c => c.Bytes));
        Assert.Equal(fp32.Where(c => c.Op == "reduce_scatter").Sum(c => c.Bytes), bf16.Where(c => c.Op == "reduce_scatter").Sum(c => c.Bytes));
    }

    /// <summary>
    /// A bf16 run saved on 2 ranks keeps fp32 masters in its shards (values bf16 cannot hold) and resumes on 2 ranks
    /// exactly, on 3 ranks or 1 within the bf16 tolerance (another reduction order).
    /// </summary>
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(1)]
    public void Bf16ShardedCheckpointResumesOnAnotherWorldSize(int resumeWorld)
    {
        const int saveAt = 4;
        using var tmp = new TempDir();
        var (uninterrupted, _) = RunSharded(2, ShardingStrategy.FullShard, free: true);
        RunSharded(2, ShardingStrategy.FullShard, free: true, saveDir: tmp.Path, steps: saveAt);
        var saved = ShardedCheckpoint.ReadConsolidated(tmp.Path);
        Assert.All(saved, t => Assert.Equal(ScalarType.Float32, t.Tensor.dtype));
        var all = cat(saved.Select(t => t.Tensor.reshape(-1)).ToArray());
        long notBf16 = all.ne(all.to(ScalarType.BFloat16).to(ScalarType.Float32)).sum().item<long>();
        Assert.True(notBf16 > all.numel() / 2, $"only {notBf16} of {all.numel()} saved masters are off the bf16 grid: the masters were rounded");

        var results = new List<StepResult>[resumeWorld];
        InProcessRanks.Run(resumeWorld, comm =>
        {
            using var model = Bf16Model(Seed + 99);
            using var engine = new FsdpTrainStep(model, comm, Options, ShardingStrategy.FullShard, freeAfterUse: true);
            engine.LoadState(tmp.Path, saveAt);
            var mine = new List<StepResult>();
            for (int s = saveAt; s < Steps; s++)
            {
                using var scope = NewDisposeScope();
                mine.Add(engine.Step(Ranked(s, comm.Rank, resumeWorld), Lr(s)));
            }
            results[comm.Rank] = mine;
        });
        var expected = uninterrupted.Skip(saveAt).ToList();
        double gap = RelativeLossGap(expected, results[0]);
        output.WriteLine($"bf16 2 ranks → {resumeWorld}: max relative loss gap {gap:E2}");
        if (resumeWorld == 2) AssertLossesMatch(expected, results[0], "bf16 resumed on the same 2 ranks");
        else Assert.True(gap <= LossTolerance, $"resumed on {resumeWorld} ranks: loss gap {gap:E2}");
    }
}
