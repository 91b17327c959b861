using MeLlama.Model;
using MeLlama.Training.Engine;
using MeLlama.Training.Finetune.Data;
using MeLlama.Training.Finetune.Engine;
using MeLlama.Training.Finetune.Lora;
using static TorchSharp.torch;
using static MeLlama.Training.Tests.Sharded.TinyRun;

namespace MeLlama.Training.Tests.Sharded;

/// <summary>
/// LoRA as data parallelism (<see cref="SftTrainStep"/> with a communicator): N in-process ranks, each with the whole model
/// and its block of the global batch, against one process on the whole batch. The ranks' blocks hold very different
/// numbers of assistant tokens (one micro-batch none), so normalising by a rank's own count instead of the global one
/// changes the losses and the weights at once.
/// </summary>
public class DataParallelLoraTests
{
    const int Steps = 5;
    static readonly LoraConfig Adapters = new() { Rank = 4, Alpha = 8, Dropout = 0, TargetModules = ["q_proj", "v_proj", "down_proj"] };
    static TrainStepOptions SftOptions => Options with { ActivationCheckpointing = false };

    static List<Tensor> Block(int step, int rank, int world)
    {
        int perRank = GlobalMicroBatches / world;
        return FsdpSftTests.SftGlobalBatch(step).Skip(rank * perRank).Take(perRank).ToList();
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void LoraOnSeveralRanksEqualsOneProcess(int world)
    {
        List<StepResult> expected = [];
        Dictionary<string, float[]> expectedWeights;
        using (var scope = NewDisposeScope())
        {
            using var model = new LlamaForCausalLM(Tiny, seed: Seed);
            using var lora = LoraModel.Apply(model, Adapters, seed: Seed);
            using var engine = new SftTrainStep(model, SftOptions);
            for (int s = 0; s < Steps; s++)
            {
                using var stepScope = NewDisposeScope();
                expected.Add(engine.Step(FsdpSftTests.SftGlobalBatch(s), Lr(s)));
            }
            expectedWeights = Weights(model);
        }
        for (int s = 0; s < Steps; s++)
        {
            var counts = Enumerable.Range(0, world).Select(r => Block(s, r, world).Sum(b => SftLabels.Instance.CountTargets(b))).ToArray();
            Assert.True(counts.Distinct().Count() > 1, $"step {s}: ranks hold {string.Join("/", counts)} targets");
        }

        var results = new List<StepResult>[world];
        var weights = new Dictionary<string, float[]>[world];
        InProcessRanks.Run(world, comm =>
        {
            using var model = new LlamaForCausalLM(Tiny, seed: Seed);
            // Other ranks draw other adapters: the engine must start every rank from rank 0's.
            using var lora = LoraModel.Apply(model, Adapters, seed: Seed + comm.Rank);
            using var engine = new SftTrainStep(model, SftOptions, comm);
            var mine = new List<StepResult>();
            for (int s = 0; s < Steps; s++)
            {
                using var stepScope = NewDisposeScope();
                mine.Add(engine.Step(Block(s, comm.Rank, world), Lr(s)));
            }
            results[comm.Rank] = mine;
            weights[comm.Rank] = Weights(model);
        });

        Assert.True(expected.Any(r => r.GradNorm > Options.GradClip), "the run should exercise clipping");
        for (int r = 0; r < world; r++)
        {
            AssertLossesMatch(expected, results[r], $"LoRA rank {r} of {world}");
            int adapters = 0;
            foreach (var (name, w) in expectedWeights)
            {
                double diff = Math.Sqrt(w.Zip(weights[r][name], (a, b) => (double)(a - b) * (a - b)).Sum());
                double norm = Math.Sqrt(w.Sum(a => (double)a * a));
                Assert.True(diff <= 1e-5 * norm, $"rank {r} {name}: ‖Δ‖/‖w‖ = {diff / norm:E2}");
                if (LoraModel.IsAdapterParameter(name)) adapters++;
                // Replicas in sync: the summed gradients, and so the updates, are bit-identical on every rank.
                Assert.True(weights[0][name].AsSpan().SequenceEqual(weights[r][name]), $"rank {r} {name} differs from rank 0's");
            }
            Assert.Equal(2 * 3 * Tiny.NumLayers, adapters);
        }
    }

    /// <summary>Only rank 0 writes the checkpoint files (the ranks hold the same state), in the one-process format.</summary>
    [Fact]
    public void OnlyRankZeroWritesTheEngineState()
    {
        using var tmp = new MeLlama.TestSupport.TempDir();
        var dirs = new[] { tmp["r0"], tmp["r1"] };
        InProcessRanks.Run(2, comm =>
        {
            using var model = new LlamaForCausalLM(Tiny, seed: Seed);
            using var lora = LoraModel.Apply(model, Adapters, seed: Seed);
            using var engine = new SftTrainStep(model, SftOptions, comm);
            engine.Step(Block(0, comm.Rank, 2), Lr(0));
            Directory.CreateDirectory(dirs[comm.Rank]);
            engine.SaveState(dirs[comm.Rank]);
        });
        Assert.NotEmpty(Directory.GetFiles(dirs[0]));
        Assert.Empty(Directory.GetFiles(dirs[1]));
    }
}
