using MeLlama.Model;
using MeLlama.TestSupport;
using MeLlama.Training.Finetune.Config;
using MeLlama.Training.Finetune.Loop;
using MeLlama.Training.Loop;

namespace MeLlama.Training.Tests.Sharded;

/// <summary>
/// The fine-tuning trainer over in-process ranks, started from an HF folder (model.init_from): the sharded engine builds
/// the model on the meta device and every rank reads only its slices, and the run equals one process loading the folder.
/// </summary>
public class ShardedFinetuneStartTests
{
    static string[] Overrides(string runDir, string data, string hf, string strategy) =>
    [
        $"run_dir={runDir}", $"data.train=[\"{data}\"]", "method=full", $"parallel.strategy={strategy}", $"model.init_from={hf}",
        "seq_len=31", "pack=false", "micro_batch=1", "grad_accum=3", "max_steps=3", "threads=1", "device=cpu", "optimizer.lr=0.003",
        "eval.interval=0", "eval.batches=2", "checkpoint.interval=100", "tensorboard=false", "data.eval_fraction=0.25",
    ];

    [Theory]
    [InlineData(2, "full_shard")]
    [InlineData(2, "no_shard")]
    [InlineData(3, "full_shard")] // 2 eval batches over 3 ranks: one rank runs only a padding forward
    public void ShardedRunFromInitFromMatchesOneProcess(int world, string strategy)
    {
        using var tmp = new TempDir();
        Finetune.FinetuneTestSupport.SingleThread();
        string data = tmp["data.jsonl"];
        File.WriteAllLines(data, Enumerable.Range(0, 8).Select(i =>
            $$"""{"instruction": "Dose {{i}}?", "output": "{{string.Concat(Enumerable.Repeat("mg ", 1 + 2 * i))}}"}"""));
        // A small base model in HF format with the gpt2 vocabulary (the demo recipe's tokenizer), untied head.
        string hf = tmp["base"];
        using (var model = new LlamaForCausalLM(LlamaConfig.Demo with
               {
                   HiddenSize = 32, NumLayers = 2, NumHeads = 2, NumKvHeads = 1, IntermediateSize = 64, VocabSize = 50257,
                   MaxPositionEmbeddings = 64, TieWordEmbeddings = false,
               }, seed: 77))
            HfCheckpoint.Save(model, hf, TorchSharp.torch.ScalarType.Float32);

        var one = new FinetuneTrainer(FinetuneConfigLoader.Load("demo", Overrides(tmp["one"], data, hf, strategy)), new FinetuneOptions()).Run();
        Assert.Equal(TrainEnd.Completed, one.End);
        var outcomes = new TrainOutcome[world];
        string sharded = tmp["sharded"];
        InProcessRanks.Run(world, comm =>
        {
            using var w = TrainingWorld.Of(comm);
            outcomes[comm.Rank] = new FinetuneTrainer(FinetuneConfigLoader.Load("demo", Overrides(sharded, data, hf, strategy)), new FinetuneOptions { World = w }).Run();
        });
        Assert.All(outcomes, o => Assert.Equal(TrainEnd.Completed, o.End));
        Assert.All(outcomes, o => Assert.Equal(one.Tokens, o.Tokens));
        var expected = TrainerHarness.TrainLosses(tmp["one"]);
        var actual = TrainerHarness.TrainLosses(sharded);
        Assert.Equal(expected.Keys, actual.Keys);
        foreach (var (step, loss) in expected)
            Assert.True(Math.Abs(actual[step] - loss) <= 1e-5 * loss, $"step {step}: {actual[step]:R} vs one process {loss:R}");
        // Held-out loss reduced over ranks: the one-process value on every rank.
        foreach (var o in outcomes)
            Assert.True(Math.Abs(o.LastEval[FinetuneTrainer.EvalDomain] - one.LastEval[FinetuneTrainer.EvalDomain]) <= 1e-5 * one.LastEval[FinetuneTrainer.EvalDomain]);
        // ...over the same tokens: a rank counting batches twice, or a padding forward's result, would change the count.
        static long[] EvalTokens(string runDir) => File.ReadLines(Path.Combine(runDir, "metrics.jsonl"))
            .Select(l => System.Text.Json.Nodes.JsonNode.Parse(l)!).Where(n => (string?)n["kind"] == "eval").Select(n => (long)n["eval_tokens"]!).ToArray();
        Assert.NotEmpty(EvalTokens(tmp["one"]));
        Assert.Equal(EvalTokens(tmp["one"]), EvalTokens(sharded));
    }
}
