using MeLlama.Distributed;
using MeLlama.Model;
using MeLlama.TestSupport;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Config;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;
using MeLlama.Training.Export;
using MeLlama.Training.Planning;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;
using static MeLlama.Training.Tests.Sharded.TinyRun;

namespace MeLlama.Training.Tests.Sharded;

/// <summary>
/// Tied input/output embeddings under the FSDP engine: the shared weight lives only in the embedding unit, is used by
/// the lookup and by the logits, and gets both gradient contributions; against the single-process engine (which
/// already sums both through autograd) for every strategy, bf16, meta start, sharded resume and export.
/// </summary>
public class FsdpTiedTests(ITestOutputHelper output)
{
    const int Steps = 10;
    const string Embed = "model.embed_tokens.weight";

    static FsdpTrainStep Engine(LlamaForCausalLM model, ICollectives comm, ShardingStrategy strategy, bool free, bool? prefetch = null,
        TrainStepOptions? options = null) =>
        new(model, comm, options ?? Options, strategy, free, prefetch);

    /// <summary>The units of a tied model: the embedding holds the one shared weight, the head only the final norm.</summary>
    static void AssertTiedUnits(FsdpTrainStep engine)
    {
        Assert.True(engine.Tied);
        Assert.Equal(new[] { Embed }, engine.Units[0].ParameterNames);
        Assert.Equal(new[] { "model.norm.weight" }, engine.Units[^1].ParameterNames);
        Assert.DoesNotContain(engine.Units.SelectMany(u => u.ParameterNames), n => n.StartsWith("lm_head", StringComparison.Ordinal));
    }

    [Theory]
    [MemberData(nameof(StrategyCases), MemberType = typeof(TinyRun))]
    public void TiedStrategyMatchesSingleProcessLossesAndWeights(int world, string strategyName, bool freeAfterUse, bool prefetch)
    {
        var strategy = ShardingStrategies.Parse(strategyName);
        var (expected, expectedWeights) = RunSingle(0, Steps, config: TinyTied);
        Assert.DoesNotContain("lm_head.weight", expectedWeights.Keys);
        var results = new List<StepResult>[world];
        var weights = new Dictionary<string, float[]>[world];
        InProcessRanks.Run(world, comm =>
        {
            long seed = strategy == ShardingStrategy.NoShard ? Seed + comm.Rank : Seed; // no-shard broadcasts rank 0's init
            using var model = new LlamaForCausalLM(TinyTied, seed: seed);
            using var engine = Engine(model, comm, strategy, freeAfterUse, prefetch);
            AssertTiedUnits(engine);
            Assert.Equal(prefetch, engine.Prefetch);
            var mine = new List<StepResult>();
            for (int s = 0; s < Steps; s++)
            {
                using var scope = NewDisposeScope();
                mine.Add(engine.Step(RankBatch(s, comm.Rank, world), Lr(s)));
                if (freeAfterUse) Assert.Equal(0, engine.ParameterStorageBytes); // the kept embedding is released at the end of each micro-batch
            }
            using (var evalScope = NewDisposeScope())
                Assert.True(double.IsFinite(engine.Evaluate(RankBatch(0, comm.Rank, world)[0]).MeanLoss));
            if (freeAfterUse) Assert.Equal(0, engine.ParameterStorageBytes);
            if (strategy == ShardingStrategy.FullShard)
                foreach (var u in engine.Units) u.Gather();
            results[comm.Rank] = mine;
            weights[comm.Rank] = Weights(model);
        });
        for (int r = 0; r < world; r++)
        {
            AssertLossesMatch(expected, results[r], $"tied {strategyName} rank {r} of {world}");
            Assert.Equal(expectedWeights.Keys.Order(StringComparer.Ordinal), weights[r].Keys.Order(StringComparer.Ordinal));
            AssertWeightsMatch(expectedWeights, weights[r], $"rank {r}");
        }
        Assert.True(expected.Any(r => r.GradNorm > Options.GradClip), "the run should exercise clipping");
    }

    /// <summary>
    /// The gradient slice of the shared weight after one step equals the single-process gradient of the global batch's
    /// loss, whose head (logits) part alone is far above the tolerance: an engine that dropped either use's
    /// contribution (or reduced one twice) fails here, not only through the weights of the test above.
    /// </summary>
    [Theory]
    [InlineData(2, "full_shard", true)]
    [InlineData(3, "full_shard", true)]
    [InlineData(2, "full_shard", false)]
    [InlineData(3, "shard_grad_op", false)]
    [InlineData(2, "no_shard", false)]
    public void SharedWeightGradientSumsTheLookupAndTheHead(int world, string strategyName, bool free)
    {
        var strategy = ShardingStrategies.Parse(strategyName);
        var noClip = Options with { GradClip = 0 }; // Grad then holds the unscaled sum after the step
        float[] full, lookupOnly;
        using (var scope = NewDisposeScope())
        {
            using var model = new LlamaForCausalLM(TinyTied, seed: Seed);
            var batches = GlobalBatch(0);
            double tokens = batches.Sum(b => b.shape[0] * (b.shape[1] - 1));
            var weight = model.Embedding.Weight;
            Tensor Loss(bool headGrad) => batches.Select(b =>
            {
                long t = b.shape[1] - 1;
                var hidden = model.Model.Forward(b.narrow(1, 0, t), null); // final-normed hidden states
                var logits = nn.functional.linear(hidden, headGrad ? weight : weight.detach()).to(ScalarType.Float32);
                return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), b.narrow(1, 1, t).reshape(-1), reduction: nn.Reduction.Sum);
            }).Aggregate((a, b) => a + b) / tokens;
            Loss(headGrad: true).backward();
            full = weight.grad!.data<float>().ToArray();
            weight.grad = null;
            Loss(headGrad: false).backward();
            lookupOnly = weight.grad!.data<float>().ToArray();
        }
        double scale = full.Max(Math.Abs);
        double headPart = full.Zip(lookupOnly, (a, b) => (double)Math.Abs(a - b)).Max();
        double lookupPart = lookupOnly.Max(x => (double)Math.Abs(x));
        double tolerance = 1e-5 * scale;
        output.WriteLine($"shared weight gradient: max |full| {scale:E3}, max |head part| {headPart:E3}, max |lookup part| {lookupPart:E3}, tolerance {tolerance:E2}");
        Assert.True(headPart > 100 * tolerance && lookupPart > 100 * tolerance, "both uses must contribute well above the tolerance");

        var gaps = new double[world];
        InProcessRanks.Run(world, comm =>
        {
            using var model = new LlamaForCausalLM(TinyTied, seed: Seed);
            using var engine = Engine(model, comm, strategy, free, options: noClip);
            engine.Step(RankBatch(0, comm.Rank, world), 1e-3);
            var unit = engine.Units[0];
            long valid = Math.Min(unit.OwnedNumel, full.Length - unit.OwnedOffset);
            var mine = unit.Grad.narrow(0, 0, valid).data<float>().ToArray();
            gaps[comm.Rank] = mine.Select((g, i) => (double)Math.Abs(g - full[unit.OwnedOffset + i])).Max();
        });
        output.WriteLine($"{strategyName} on {world} ranks: max |Δ grad| per rank {string.Join(", ", gaps.Select(g => g.ToString("E2")))}");
        Assert.All(gaps, g => Assert.True(g <= tolerance, $"gradient gap {g:E2} > {tolerance:E2}"));
    }

    /// <summary>
    /// Full shard with freeAfterUse + prefetch: the gathered parameter storage (units in use and the one being
    /// prefetched), read from the tensors whenever a unit starts computing, peaks at the planner's tied figure
    /// (embedding kept for the micro-batch + the largest other unit ×2), up to the padding the planner leaves out.
    /// </summary>
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void GatheredParametersPeakAtThePlannersTiedFigure(int world)
    {
        var plan = MemoryPlanner.Plan(new MemoryPlanRequest
        {
            Model = TinyTied, Gpus = world, GpuMemoryBytes = 1L << 30, Precision = "fp32", MicroBatch = MicroBatchSize, SeqLen = SeqLen,
        });
        var peaks = new long[world];
        InProcessRanks.Run(world, comm =>
        {
            using var model = new LlamaForCausalLM(TinyTied, seed: Seed);
            using var engine = Engine(model, comm, ShardingStrategy.FullShard, free: true);
            Assert.True(engine.Prefetch);
            long peak = 0;
            engine.UnitInUse = (_, inUse) =>
            {
                if (inUse) peak = Math.Max(peak, engine.ParameterStorageBytes + (engine.PrefetchedUnit?.Layout.PaddedNumel ?? 0) * sizeof(float));
            };
            using (var scope = NewDisposeScope()) engine.Step(RankBatch(0, comm.Rank, world), Lr(0));
            peaks[comm.Rank] = peak;
        });
        output.WriteLine($"{world} ranks: gathered parameter peak {string.Join(", ", peaks)} B, plan {plan["parameters"]} B");
        Assert.All(peaks, p => Assert.InRange(p, plan["parameters"], plan["parameters"] + 3L * world * sizeof(float)));
    }

    // The tolerances of FsdpBf16Tests (measured there against precision mistakes on the untied model).
    const double Bf16LossTolerance = 1e-4;
    const double Bf16MasterTolerance = 2e-3;

    /// <summary>bf16 single process with fp32 masters from the fp32 init, on the repeating batches of FsdpBf16Tests; losses and masters.</summary>
    static (List<StepResult> Results, Dictionary<string, float[]> Masters) RunSingleBf16(int steps)
    {
        using var scope = NewDisposeScope();
        using var tmp = new TempDir();
        using var model = new LlamaForCausalLM(TinyTied, seed: Seed);
        model.to(ScalarType.BFloat16);
        using var engine = new SingleProcessTrainStep(model, Options);
        using var fp32 = new LlamaForCausalLM(TinyTied, seed: Seed);
        var reference = fp32.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        engine.LoadMasterWeights(name => reference[name].alias());
        var results = new List<StepResult>();
        for (int s = 0; s < steps; s++)
        {
            using var stepScope = NewDisposeScope();
            results.Add(engine.Step(GlobalBatch(s % 2), Lr(s)));
        }
        engine.SaveState(tmp.Path);
        using var reader = SafeTensorsReader.Open(Path.Combine(tmp.Path, CheckpointFiles.Model));
        return (results, reader.Entries.Keys.ToDictionary(n => n, n => reader.ReadTensor(n, ScalarType.Float32).data<float>().ToArray()));
    }

    [Theory]
    [InlineData("full_shard", true)]
    [InlineData("shard_grad_op", false)]
    [InlineData("no_shard", false)]
    public void TiedBf16OnTwoRanksMatchesSingleProcessBf16(string strategyName, bool free)
    {
        const int steps = 8, world = 2;
        var strategy = ShardingStrategies.Parse(strategyName);
        var (expected, expectedMasters) = RunSingleBf16(steps);
        using var tmp = new TempDir();
        var results = new List<StepResult>[world];
        InProcessRanks.Run(world, comm =>
        {
            using var model = new LlamaForCausalLM(TinyTied, META, ScalarType.BFloat16, initialize: false);
            using var engine = new FsdpTrainStep(model, comm, Options, strategy, free, masters: MasterSources.RandomInit(TinyTied, Seed, CPU), device: CPU);
            AssertTiedUnits(engine);
            Assert.All(engine.Units, u => Assert.Equal(ScalarType.BFloat16, u.ComputeDtype));
            var mine = new List<StepResult>();
            for (int s = 0; s < steps; s++)
            {
                using var scope = NewDisposeScope();
                mine.Add(engine.Step(RankBatch(s % 2, comm.Rank, world), Lr(s)));
            }
            engine.SaveState(tmp.Path);
            results[comm.Rank] = mine;
        });
        AssertLossesMatch(results[0], results[1], "bf16 rank 1 vs rank 0");
        var masters = ShardedCheckpoint.ReadConsolidated(tmp.Path).ToDictionary(t => t.Name, t => t.Tensor.data<float>().ToArray());
        Assert.Equal(expectedMasters.Keys.Order(StringComparer.Ordinal), masters.Keys.Order(StringComparer.Ordinal));
        double lossGap = expected.Zip(results[0], (x, y) => Math.Abs(x.Loss - y.Loss) / Math.Abs(x.Loss)).Max();
        double masterGap = expectedMasters.Max(kv => kv.Value.Zip(masters[kv.Key], (x, y) => (double)Math.Abs(x - y)).Max());
        output.WriteLine($"tied bf16 {strategyName} on 2 ranks vs single-process bf16: max relative loss gap {lossGap:E2}, max |Δ master| {masterGap:E2}");
        Assert.True(lossGap <= Bf16LossTolerance, $"loss gap {lossGap:E2}");
        Assert.True(masterGap <= Bf16MasterTolerance, $"master gap {masterGap:E2}");
        Assert.True(expected[^1].Loss < expected[0].Loss - 0.05, "the bf16 run should learn: " + string.Join(", ", expected.Select(r => r.Loss)));
    }

    /// <summary>Every unit's master slice per rank, and the losses of a few steps after it.</summary>
    static (float[][][] Masters, List<StepResult>[] Losses) Start(int world, Func<ICollectives, (LlamaForCausalLM, FsdpTrainStep)> build, int steps)
    {
        var masters = new float[world][][];
        var losses = new List<StepResult>[world];
        InProcessRanks.Run(world, comm =>
        {
            var (model, engine) = build(comm);
            using var _ = model;
            using var __ = engine;
            AssertTiedUnits(engine);
            masters[comm.Rank] = engine.Units.Select(u => u.Master.data<float>().ToArray()).ToArray();
            losses[comm.Rank] = [];
            for (int s = 0; s < steps; s++)
            {
                using var scope = NewDisposeScope();
                losses[comm.Rank].Add(engine.Step(RankBatch(s, comm.Rank, world), Lr(s)));
            }
        });
        return (masters, losses);
    }

    static void AssertSameStart((float[][][] Masters, List<StepResult>[] Losses) expected, (float[][][] Masters, List<StepResult>[] Losses) actual, string what)
    {
        for (int r = 0; r < expected.Masters.Length; r++)
        {
            for (int u = 0; u < expected.Masters[r].Length; u++)
                Assert.True(expected.Masters[r][u].SequenceEqual(actual.Masters[r][u]), $"{what}: rank {r} unit {u} masters differ");
            Assert.Equal(expected.Losses[r].Select(x => x.Loss), actual.Losses[r].Select(x => x.Loss));
        }
    }

    [Theory]
    [InlineData(2, "full_shard", true)]
    [InlineData(3, "full_shard", true)]
    [InlineData(3, "shard_grad_op", false)]
    [InlineData(2, "no_shard", false)]
    public void MetaStartOfTiedModelEqualsFullBuiltBitForBit(int world, string strategyName, bool free)
    {
        const int steps = 3;
        var strategy = ShardingStrategies.Parse(strategyName);
        var full = Start(world, comm =>
        {
            var model = new LlamaForCausalLM(TinyTied, seed: Seed);
            return (model, Engine(model, comm, strategy, free));
        }, steps);
        var meta = Start(world, comm =>
        {
            var model = new LlamaForCausalLM(TinyTied, META, initialize: false);
            var engine = new FsdpTrainStep(model, comm, Options, strategy, free, masters: MasterSources.RandomInit(TinyTied, Seed, CPU), device: CPU);
            Assert.All(model.parameters(), p => Assert.Equal(DeviceType.CPU, p.device_type));
            return (model, engine);
        }, steps);
        AssertSameStart(full, meta, $"tied {strategyName} on {world} ranks, random init");
    }

    /// <summary>init_from a tied HF folder (no lm_head.weight): each rank reads its slices; equal to the full-size load.</summary>
    [Theory]
    [InlineData(2, "full_shard", true)]
    [InlineData(3, "shard_grad_op", false)]
    public void MetaStartFromTiedHfCheckpointEqualsFullLoad(int world, string strategyName, bool free)
    {
        const int steps = 2;
        var strategy = ShardingStrategies.Parse(strategyName);
        using var tmp = new TempDir();
        using (var source = new LlamaForCausalLM(TinyTied, seed: Seed + 5))
            HfCheckpoint.Save(source, tmp.Path, ScalarType.Float32);
        using (var check = SafeTensorsCheckpoint.Open(tmp.Path))
        {
            Assert.DoesNotContain("lm_head.weight", check.Names);
            Assert.Contains(Embed, check.Names);
        }
        var full = Start(world, comm =>
        {
            var model = HfCheckpoint.LoadModel(tmp.Path);
            Assert.Null(model.LmHead);
            return (model, Engine(model, comm, strategy, free));
        }, steps);
        var meta = Start(world, comm =>
        {
            var checkpoint = SafeTensorsCheckpoint.Open(tmp.Path);
            var model = new LlamaForCausalLM(HfCheckpoint.LoadConfig(tmp.Path), META, initialize: false);
            var engine = new FsdpTrainStep(model, comm, Options, strategy, free, masters: MasterSources.FromCheckpoint(checkpoint), device: CPU);
            checkpoint.Dispose();
            return (model, engine);
        }, steps);
        AssertSameStart(full, meta, $"tied HF init_from, {strategyName} on {world} ranks");
    }

    /// <summary>Full shard (freeAfterUse + prefetch) steps [from, to) on <paramref name="world"/> ranks, optionally resumed from / saved to a folder.</summary>
    static List<StepResult> RunFullShard(int world, int from, int to, string? loadDir = null, string? saveDir = null)
    {
        var results = new List<StepResult>[world];
        InProcessRanks.Run(world, comm =>
        {
            using var model = new LlamaForCausalLM(TinyTied, META, initialize: false);
            using var engine = new FsdpTrainStep(model, comm, Options, ShardingStrategy.FullShard, freeAfterUse: true,
                masters: loadDir is null ? MasterSources.RandomInit(TinyTied, Seed, CPU) : null, device: CPU);
            if (loadDir is not null) engine.LoadState(loadDir, from);
            var mine = new List<StepResult>();
            for (int s = from; s < to; s++)
            {
                using var scope = NewDisposeScope();
                mine.Add(engine.Step(RankBatch(s, comm.Rank, world), Lr(s)));
            }
            if (saveDir is not null) engine.SaveState(saveDir);
            results[comm.Rank] = mine;
        });
        for (int r = 1; r < world; r++) AssertLossesMatch(results[0], results[r], $"rank {r} vs rank 0");
        return results[0];
    }

    [Fact]
    public void TiedShardedSaveOnTwoRanksResumesOnThreeWithTheUninterruptedLosses()
    {
        const int saveAt = 5;
        using var tmp = new TempDir();
        var (single, _) = RunSingle(0, Steps, config: TinyTied);
        var uninterrupted = RunFullShard(2, 0, Steps);
        AssertLossesMatch(single, uninterrupted, "uninterrupted tied full_shard on 2 ranks");
        RunFullShard(2, 0, saveAt, saveDir: tmp.Path);
        var meta = ShardedCheckpoint.ReadMetadata(tmp.Path);
        Assert.Equal(TinyTied.NumLayers + 2, meta.Units.Count);
        Assert.Equal(TinyTied.ParameterCount(), meta.Units.Sum(u => u.Numel));
        Assert.Equal(new[] { Embed }, meta.Units[0].Parameters.Select(p => p.Name));
        Assert.Equal(new[] { "model.norm.weight" }, meta.Units[^1].Parameters.Select(p => p.Name));
        var resumed = RunFullShard(3, saveAt, Steps, loadDir: tmp.Path);
        AssertLossesMatch(uninterrupted.Skip(saveAt).ToList(), resumed, "tied, saved on 2 ranks, resumed on 3");
    }

    [Fact]
    public void ExportOfTiedShardedCheckpointEqualsTheSingleProcessExportWithoutLmHead()
    {
        const int steps = 3;
        using var tmp = new TempDir();
        WriteCheckpoint(tmp["sharded-run"], steps, TinyTied, dir => RunFullShard(2, 0, steps, saveDir: dir));
        string singleCheckpoint = WriteSingleProcessCheckpoint(tmp["single-run"], steps, TinyTied);
        string fromSharded = HfExporter.Export(tmp["sharded-run"], tmp["hf-sharded"], ScalarType.Float32);
        string fromSingle = HfExporter.Export(singleCheckpoint, tmp["hf-single"], ScalarType.Float32);
        Assert.Equal(File.ReadAllText(Path.Combine(fromSingle, "config.json")), File.ReadAllText(Path.Combine(fromSharded, "config.json")));
        using var a = SafeTensorsReader.Open(Path.Combine(fromSharded, "model.safetensors"));
        using var b = SafeTensorsReader.Open(Path.Combine(fromSingle, "model.safetensors"));
        Assert.DoesNotContain("lm_head.weight", a.Entries.Keys);
        Assert.Equal(b.Entries.Keys.Order(StringComparer.Ordinal), a.Entries.Keys.Order(StringComparer.Ordinal));
        foreach (var name in a.Entries.Keys)
        {
            using var scope = NewDisposeScope();
            double maxDiff = (a.ReadTensor(name) - b.ReadTensor(name)).abs().max().item<float>();
            Assert.True(maxDiff < 1e-5, $"{name}: sharded vs single-process export differ by {maxDiff}");
        }
        using var loaded = HfCheckpoint.LoadModel(fromSharded);
        Assert.Null(loaded.LmHead);
        Assert.Equal(TinyTied.ParameterCount(), loaded.parameters().Sum(p => p.numel()));
    }
}
