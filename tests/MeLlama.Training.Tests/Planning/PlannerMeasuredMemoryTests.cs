using MeLlama.Distributed;
using MeLlama.Model;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;
using MeLlama.Training.Planning;
using MeLlama.Training.Tests.Sharded;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MeLlama.Training.Tests.Planning;

/// <summary>Resident-memory measurements are meaningless while other tests allocate in the same process.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MemoryMeasurementCollection
{
    public const string Name = "memory measurements (run alone)";
}

/// <summary>The planner's formula against what the engines hold on CPU.</summary>
[Collection(MemoryMeasurementCollection.Name)]
public class PlannerMeasuredMemoryTests(ITestOutputHelper output)
{
    const long Seed = 77;

    // Sizes chosen so that 3 ranks pad every unit (an even hidden size makes every unit even, so 2 ranks never pad).
    static readonly LlamaConfig Tiny = LlamaConfig.Demo with
    {
        HiddenSize = 40, NumLayers = 3, NumHeads = 4, NumKvHeads = 2, IntermediateSize = 70, VocabSize = 101,
        MaxPositionEmbeddings = 64, TieWordEmbeddings = false,
    };

    static TrainStepOptions Options(bool checkpointing) => new(0.9, 0.95, 1e-8, 0.1, 1.0, checkpointing);

    static Tensor[] Batch(LlamaConfig c, int microBatches, int batch, int seq, long seed)
    {
        var gen = new Generator((ulong)seed);
        return Enumerable.Range(0, microBatches)
            .Select(_ => randint(0, c.VocabSize, [batch, seq + 1], dtype: ScalarType.Int64, generator: gen)).ToArray();
    }

    [Theory]
    [InlineData(1, "fp32")]
    [InlineData(2, "fp32")]
    [InlineData(3, "fp32")]
    [InlineData(2, "bf16")]
    [InlineData(3, "bf16")]
    [InlineData(2, "fp32", true)]
    [InlineData(3, "bf16", true)]
    public void Sharded_state_and_parameters_per_rank_equal_the_plan_exactly(int world, string precision, bool tied = false)
    {
        var config = tied ? Tiny with { TieWordEmbeddings = true } : Tiny;
        var request = new MemoryPlanRequest
        {
            Model = config, Gpus = world, GpuMemoryBytes = 1L << 30, Precision = precision, MicroBatch = 2, SeqLen = 8,
            ResidentComputeParameters = true,
        };
        var plan = MemoryPlanner.Plan(request);
        long[] units = MemoryPlanner.UnitParameterCounts(config);
        Assert.Equal(config.ParameterCount(), units.Sum());
        var held = new long[world];
        var parameterBytes = new long[world];
        var unitNumels = new long[world][];
        void Body(ICollectives comm)
        {
            using var scope = NewDisposeScope();
            using var model = new LlamaForCausalLM(config, seed: Seed);
            // bf16: bf16 compute parameters, fp32 masters (from the fp32 init), gradient slices and moments.
            if (precision == "bf16") model.to(ScalarType.BFloat16);
            using var engine = new FsdpTrainStep(model, comm, Options(checkpointing: true),
                masters: precision == "bf16" ? MasterSources.RandomInit(config, Seed, CPU) : null);
            engine.Step(Batch(config, 1, 2, 8, Seed + comm.Rank), 1e-3);
            // Counted from the tensors the engine holds after a step, not from its own arithmetic.
            held[comm.Rank] = engine.Units.Sum(u => new[] { u.Master, u.Grad, u.ExpAvg, u.ExpAvgSq }.Sum(t => t.numel() * t.ElementSize));
            parameterBytes[comm.Rank] = model.parameters().Sum(p => p.numel() * p.ElementSize);
            unitNumels[comm.Rank] = engine.Units.Select(u => u.Layout.Numel).ToArray();
            Assert.Equal(0, model.parameters().Count(p => p.grad is not null)); // transient full grads are gone
        }
        if (world == 1)
        {
            using var single = new SingleProcessCollectives();
            Body(single);
        }
        else InProcessRanks.Run(world, Body);

        long slice = MemoryPlanner.ShardElements(config, world);
        long largest = units.Max(), largestPadded = units.Max(n => ShardLayout.For(n, world).PaddedNumel);
        Assert.Equal(slice * 4, plan["fp32 master"]);
        int e = precision == "bf16" ? 2 : 4;
        if (!tied) Assert.Equal(slice * 4 + largest * e + largestPadded * 4, plan["gradients"]); // slice + one unit's transient buffers (compute-dtype grads, fp32 flat)
        else
        {
            // Tied: the embedding's compute-dtype gradient is held from the head's backward to the lookup's, beside the other units' transient buffers.
            Assert.Equal(units[0], config.VocabSize * (long)config.HiddenSize);
            Assert.Equal(config.HiddenSize, units[^1]); // the head unit is the final norm only
            long other = units.Skip(1).Max(), otherPadded = units.Skip(1).Max(n => ShardLayout.For(n, world).PaddedNumel);
            Assert.Equal(slice * 4 + units[0] * e + Math.Max(other * e + otherPadded * 4, ShardLayout.For(units[0], world).PaddedNumel * 4), plan["gradients"]);
        }
        Assert.Equal(2 * slice * 4, plan["AdamW moments"]);
        for (int r = 0; r < world; r++)
        {
            Assert.Equal(units, unitNumels[r]);
            // master + gradient slice + two moments: the gradient slice is the size of the master slice.
            Assert.Equal(plan["fp32 master"] + plan["fp32 master"] + plan["AdamW moments"], held[r]);
            Assert.Equal(plan["parameters"], parameterBytes[r]);
        }
        // Padding is all that separates a rank's share from an even 1/N split: < one element per unit.
        Assert.Equal(config.ParameterCount() * e, plan["parameters"]); // resident compute copies: 2 B each in bf16
        long even = 4 * 4 * config.ParameterCount() / world;
        Assert.InRange(held[0], even, even + 4L * 4 * units.Length);
        output.WriteLine($"world {world} {precision}: {held[0]} B sharded state per rank (1/N of the model's 16 B/param would be {even} B)");
    }

    // Resident memory is a process-wide figure: after the rest of the suite has run in the same process (allocator arenas,
    // thread pools) a full-suite run measured the checkpointed step at 1.19-1.24x the plan, run alone at 0.92. So these
    // two run alone, on request (scripts/bench/planner-memory.sh); the exact sharded-bytes check above always runs.
    const string RssOnlyAlone = "resident-memory measurement: run alone with scripts/bench/planner-memory.sh (MELLAMA_MEMORY_TESTS=1); other tests in the process distort it";

    [SkippableFact]
    public void Activation_estimate_matches_resident_memory_of_a_forward_pass_within_25_percent()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MELLAMA_MEMORY_TESTS") == "1", RssOnlyAlone);
        Skip.IfNot(ProcessMemory.Available, "needs Linux /proc/self/statm");
        ProcessMemory.PinMallocThresholds();
        // Big enough that every saved tensor is ≥ 64 KiB (its own mapping), small enough for a CI core.
        var c = LlamaConfig.Demo with { HiddenSize = 256, NumLayers = 4, NumHeads = 8, NumKvHeads = 4, IntermediateSize = 688, VocabSize = 2000, MaxPositionEmbeddings = 256 };
        const int batch = 4, seq = 128;
        long tokens = batch * seq;
        using var scope = NewDisposeScope();
        using var model = new LlamaForCausalLM(c, seed: Seed);
        var ids = Batch(c, 1, batch, seq, Seed)[0];
        var inputs = ids.narrow(1, 0, seq);
        var labels = ids.narrow(1, 1, seq).reshape(-1);
        Tensor Loss(Tensor logits) => nn.functional.cross_entropy(logits.reshape(-1, c.VocabSize), labels);
        // Warm-up: thread pools, kernel scratch and lazily built tables exist before the baseline.
        for (int i = 0; i < 2; i++)
        {
            using var warm = NewDisposeScope();
            Loss(model.forward(inputs)).backward();
            model.zero_grad(set_to_none: true);
        }
        // Anything else the process does meanwhile only adds resident memory: the smallest of a few forwards is the forward's own.
        long measured = long.MaxValue;
        for (int attempt = 0; attempt < 3; attempt++)
        {
            GC.Collect();
            long before = ProcessMemory.ResidentBytes();
            using var step = NewDisposeScope();
            var logits = model.forward(inputs);
            var loss = Loss(logits);
            measured = Math.Min(measured, ProcessMemory.ResidentBytes() - before);
            GC.KeepAlive(loss);
        }
        // What is alive after forward: every layer's saved tensors, the final norm's, the logits and the
        // log-probabilities cross-entropy saves (no gradients yet).
        long estimate = ActivationModel.Bytes(c, tokens, 4, checkpointing: false) + 2 * tokens * c.VocabSize * 4;
        double ratio = measured / (double)estimate;
        output.WriteLine($"forward of {batch}×{seq} tokens: measured {measured / 1048576.0:F2} MiB, planner {estimate / 1048576.0:F2} MiB, ratio {ratio:F3}");
        Assert.InRange(ratio, 0.75, 1.25);
    }

    [SkippableFact]
    public void Checkpointed_step_peak_stays_under_the_plan_and_near_it()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MELLAMA_MEMORY_TESTS") == "1", RssOnlyAlone);
        Skip.IfNot(ProcessMemory.Available && File.Exists("/proc/self/clear_refs"), "needs Linux /proc/self/statm and clear_refs");
        ProcessMemory.PinMallocThresholds();
        var c = LlamaConfig.Demo with { HiddenSize = 256, NumLayers = 4, NumHeads = 8, NumKvHeads = 4, IntermediateSize = 688, VocabSize = 1000, MaxPositionEmbeddings = 512 };
        const int batch = 8, seq = 256;
        using var scope = NewDisposeScope();
        using var model = new LlamaForCausalLM(c, seed: Seed);
        using var engine = new SingleProcessTrainStep(model, Options(checkpointing: true));
        var ids = Batch(c, 1, batch, seq, Seed);
        engine.Step(ids, 1e-4); // warm-up: AdamW state, thread pools, kernel scratch
        // Whatever else the process does while a step runs (GC, other threads' scratch) can only add resident memory, so
        // the smallest of a few measured steps is the step's own peak.
        long peak = long.MaxValue;
        for (int attempt = 0; attempt < 3; attempt++)
        {
            model.zero_grad(set_to_none: true); // the baseline holds no gradients; the measured step allocates them
            GC.Collect();
            long before = ProcessMemory.ResidentBytes();
            File.WriteAllText("/proc/self/clear_refs", "5"); // resets VmHWM (peak RSS) to the current RSS
            engine.Step(ids, 1e-4);
            peak = Math.Min(peak, PeakResidentBytes() - before);
        }
        // The single-process fp32 engine is no_shard on one GPU: gradients (model × 4 B), activations, logits.
        var plan = MemoryPlanner.Plan(new MemoryPlanRequest
        {
            Model = c, Gpus = 1, GpuMemoryBytes = 1L << 40, Strategy = ShardingStrategy.NoShard, Precision = "fp32",
            ActivationCheckpointing = true, MicroBatch = batch, SeqLen = seq, MarginBytes = 0,
        });
        long estimate = plan["gradients"] + plan["activations"] + plan["logits"];
        double ratio = peak / (double)estimate;
        output.WriteLine($"checkpointed step {batch}×{seq}: peak growth {peak / 1048576.0:F2} MiB, planner grads+activations+logits " +
                         $"{estimate / 1048576.0:F2} MiB (activations {plan["activations"] / 1048576.0:F2}, logits {plan["logits"] / 1048576.0:F2}), ratio {ratio:F3}");
        // The plan adds up terms that are not all alive at the same moment (logits are gone before the layers are
        // recomputed), so it is an upper bound; it must not be loose by more than that overlap.
        Assert.InRange(ratio, 0.6, 1.0);
    }

    static long PeakResidentBytes()
    {
        var line = File.ReadLines("/proc/self/status").First(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
        return long.Parse(line["VmHWM:".Length..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture) * 1024;
    }
}
