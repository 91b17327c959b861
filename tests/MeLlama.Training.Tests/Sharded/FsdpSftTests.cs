using MeLlama.Model;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;
using MeLlama.Training.Finetune.Data;
using MeLlama.Training.Finetune.Engine;
using static TorchSharp.torch;
using static MeLlama.Training.Tests.Sharded.TinyRun;

namespace MeLlama.Training.Tests.Sharded;

/// <summary>
/// The FSDP engine on fine-tuning rows (loss mask folded into the ids) against the one-process <see cref="SftTrainStep"/>
/// on the same global batch: the ranks hold very different numbers of target tokens (one micro-batch has none), so a
/// per-rank mean instead of the global one would show at once.
/// </summary>
public class FsdpSftTests
{
    const int Steps = 6;

    static TrainStepOptions SftOptions => Options with { ActivationCheckpointing = false };

    /// <summary>
    /// Step <paramref name="step"/>'s global batch as SFT rows: a prompt prefix of random length is input only, and the
    /// fraction labelled differs per micro-batch (micro-batch 1 has no target at all, the last ones are almost all targets).
    /// </summary>
    public static Tensor[] SftGlobalBatch(int step)
    {
        var rng = new Random(unchecked((int)Seed + 7919 * step));
        return GlobalBatch(step).Select((ids, m) =>
        {
            var rows = ids.data<long>().ToArray();
            int width = SeqLen + 1;
            for (int b = 0; b < MicroBatchSize; b++)
            {
                int prompt = m == 1 ? width : Math.Min(width, rng.Next(1, width) * (GlobalMicroBatches - m) / GlobalMicroBatches + 1);
                for (int i = 0; i < width; i++)
                {
                    int id = (int)rows[b * width + i];
                    rows[b * width + i] = SftRows.Encode(id, target: i >= prompt);
                }
            }
            return tensor(rows, [MicroBatchSize, width]);
        }).ToArray();
    }

    static List<Tensor> SftRankBatch(int step, int rank, int world)
    {
        int perRank = GlobalMicroBatches / world;
        return SftGlobalBatch(step).Skip(rank * perRank).Take(perRank).ToList();
    }

    static (List<StepResult> Results, Dictionary<string, float[]> Weights) RunSft()
    {
        using var scope = NewDisposeScope();
        using var model = new LlamaForCausalLM(Tiny, seed: Seed);
        using var engine = new SftTrainStep(model, SftOptions);
        var results = new List<StepResult>();
        for (int s = 0; s < Steps; s++)
        {
            using var stepScope = NewDisposeScope();
            results.Add(engine.Step(SftGlobalBatch(s), Lr(s)));
        }
        return (results, Weights(model));
    }

    [Theory]
    [InlineData(2, "full_shard", true)]
    [InlineData(3, "full_shard", true)]
    [InlineData(3, "full_shard", false)]
    [InlineData(2, "no_shard", false)]
    [InlineData(3, "no_shard", false)]
    [InlineData(2, "shard_grad_op", false)]
    public void ShardedSftStepsMatchOneProcessSftTrainStep(int world, string strategyName, bool freeAfterUse)
    {
        var strategy = ShardingStrategies.Parse(strategyName);
        var (expected, expectedWeights) = RunSft();
        // The batch really is uneven across ranks: the ranks' target counts differ in every step.
        for (int s = 0; s < Steps; s++)
        {
            var counts = Enumerable.Range(0, world).Select(r => SftRankBatch(s, r, world).Sum(b => SftLabels.Instance.CountTargets(b))).ToArray();
            Assert.True(counts.Distinct().Count() > 1, $"step {s}: ranks hold {string.Join("/", counts)} targets");
            Assert.Equal(expected[s].Tokens, counts.Sum());
            Assert.True(expected[s].Tokens < GlobalMicroBatches * MicroBatchSize * SeqLen, "some positions must be prompt");
        }
        var (results, weights) = RunRanks(world, Steps, comm =>
        {
            var model = new LlamaForCausalLM(Tiny, seed: Seed);
            return (model, new FsdpTrainStep(model, comm, SftOptions, strategy, freeAfterUse, labels: SftLabels.Instance));
        }, (s, rank) => SftRankBatch(s, rank, world));
        for (int r = 0; r < world; r++)
        {
            AssertLossesMatch(expected, results[r], $"{strategyName} rank {r} of {world}");
            foreach (var (name, w) in expectedWeights)
            {
                // Relative to the tensor's norm: ‖Δ‖ / ‖w‖ (elementwise ratios of weights near zero only measure rounding).
                double diff = Math.Sqrt(w.Zip(weights[r][name], (a, b) => (double)(a - b) * (a - b)).Sum());
                double norm = Math.Sqrt(w.Sum(a => (double)a * a));
                Assert.True(diff <= 1e-5 * norm, $"rank {r} {name}: ‖Δ‖/‖w‖ = {diff / norm:E2}");
            }
        }
        Assert.True(expected.Any(r => r.GradNorm > Options.GradClip), "the run should exercise clipping");
    }

    /// <summary>A step whose rows hold no target on any rank is skipped on every rank, weights untouched, as one process skips it.</summary>
    [Fact]
    public void StepWithoutTargetsAnywhereIsSkippedOnEveryRank()
    {
        const int world = 2;
        Tensor[] Prompts() => GlobalBatch(0).Select(b => b.bitwise_not()).ToArray(); // every token input only
        using (var model = new LlamaForCausalLM(Tiny, seed: Seed))
        using (var single = new SftTrainStep(model, SftOptions))
        {
            var r = single.Step(Prompts(), Lr(0));
            Assert.True(r.Skipped);
            Assert.Equal(0, r.Tokens);
        }
        var before = new Dictionary<string, float[]>[world];
        var after = new Dictionary<string, float[]>[world];
        var results = new StepResult[world];
        var next = new StepResult[world];
        InProcessRanks.Run(world, comm =>
        {
            using var model = new LlamaForCausalLM(Tiny, seed: Seed);
            before[comm.Rank] = Weights(model);
            using var engine = new FsdpTrainStep(model, comm, SftOptions, ShardingStrategy.FullShard, freeAfterUse: true, labels: SftLabels.Instance);
            int per = GlobalMicroBatches / world;
            results[comm.Rank] = engine.Step(Prompts().Skip(comm.Rank * per).Take(per).ToList(), Lr(0));
            foreach (var u in engine.Units) u.Gather();
            after[comm.Rank] = Weights(model);
            foreach (var u in engine.Units) u.Release();
            Assert.Equal(0, engine.OptimizerSteps);
            // The engine is still in lockstep afterwards: a real step runs on both ranks.
            next[comm.Rank] = engine.Step(SftRankBatch(1, comm.Rank, world), Lr(1));
        });
        for (int r = 0; r < world; r++)
        {
            Assert.True(results[r].Skipped);
            Assert.Equal(0, results[r].Tokens);
            foreach (var (name, w) in before[r]) Assert.Equal(w, after[r][name]);
            Assert.False(next[r].Skipped);
            Assert.True(next[r].Tokens > 0);
        }
    }
}
