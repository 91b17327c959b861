using MeLlama.TestSupport;
using MeLlama.Training.Config;
using MeLlama.Training.Finetune.Config;

namespace MeLlama.Training.Tests.Finetune;

public class FinetuneConfigTests
{
    [Fact]
    public void ShippedRecipeAndDemoParse()
    {
        var recipe = FinetuneConfigLoader.Load(Path.Combine(SharedData.RepoRoot, "configs", "finetune", "me-llama-13b-chat.json"));
        Assert.Equal("lora", recipe.Method);
        Assert.Equal(3, recipe.Epochs);
        Assert.Equal(1e-5, recipe.Optimizer.Lr);
        Assert.Equal("mellama", recipe.Template!.GetValue<string>());
        var demo = FinetuneConfigLoader.Load("demo", ["data.train=[\"x.jsonl\"]"]);
        Assert.Null(demo.Model.InitFrom);
        Assert.Equal("gpt2", demo.Model.Tokenizer);
        Assert.True(demo.Model.Arch!.MaxPositionEmbeddings >= demo.SeqLen + 1);
        // The resolved config round-trips (it is stored in every checkpoint).
        var again = FinetuneConfigLoader.Parse(FinetuneConfigLoader.ToJson(demo), "round trip");
        Assert.Equal(FinetuneConfigLoader.ToJson(demo), FinetuneConfigLoader.ToJson(again));
    }

    [Fact]
    public void OverridesAndMistakesAreReportedByKey()
    {
        var c = FinetuneConfigLoader.Load("demo", ["data.train=[\"a.jsonl\"]", "lora.rank=4", "template={\"name\": \"qa\", \"user_format\": \"Q: {content}\\nA:\"}", "method=full"]);
        Assert.Equal(4, c.Lora.Rank);
        Assert.Equal("full", c.Method);
        var e = Assert.Throws<ConfigError>(() => FinetuneConfigLoader.Load("demo", ["data.train=[\"a.jsonl\"]", "lora.rnak=4"]));
        Assert.Contains("lora.rnak", e.Message);
        e = Assert.Throws<ConfigError>(() => FinetuneConfigLoader.Load("demo"));
        Assert.Contains("data.train", e.Message);
        e = Assert.Throws<ConfigError>(() => FinetuneConfigLoader.Load("demo", ["data.train=[\"a.jsonl\"]", "template=vicuna"]));
        Assert.Contains("vicuna", e.Message);
        e = Assert.Throws<ConfigError>(() => FinetuneConfigLoader.Load("demo", ["data.train=[\"a.jsonl\"]", "lora.target_modules=[\"lm_head\"]"]));
        Assert.Contains("lm_head", e.Message);
        e = Assert.Throws<ConfigError>(() => FinetuneConfigLoader.Parse("""{"data": {"train": ["a"]}, "model": {"arch": {}, "tokenizer": "gpt2"}, "epochz": 3}""", "f.json"));
        Assert.Contains("epochz", e.Message);
        e = Assert.Throws<ConfigError>(() => FinetuneConfigLoader.Load("demo", ["data.train=[\"a.jsonl\"]", "parallel.strategy=zero3"]));
        Assert.Contains("parallel.strategy must be one of full_shard, shard_grad_op, no_shard, not 'zero3'", e.Message);
        Assert.Equal("no_shard", FinetuneConfigLoader.Load("demo", ["data.train=[\"a.jsonl\"]", "parallel.strategy=no_shard"]).Parallel.Strategy);
    }
}
