using MeLlama.Data.Config;
using MeLlama.Data.Prepare;
using MeLlama.TestSupport;
using MeLlama.Tokenization;

namespace MeLlama.Data.Tests;

public class ConfigTests
{
    static string ConfigDir => Path.Combine(SharedData.RepoRoot, "configs", "data");

    [Fact]
    public void Shipped_configs_load_and_validate()
    {
        var meLlama = DataConfig.Load(Path.Combine(ConfigDir, "me-llama.json"));
        Assert.Equal(6, meLlama.Sources.Count);
        Assert.Equal(new Dictionary<string, double> { ["biomedical"] = 15, ["clinical"] = 1, ["general"] = 4 }, meLlama.Mixture);
        Assert.All(meLlama.Sources.Where(s => s.Domain == "clinical"), s => Assert.True(s.IsRestricted));
        var demo = DataConfig.Load(Path.Combine(ConfigDir, "demo.json"));
        Assert.Equal("gpt2", demo.Tokenizer);
        // The templates carry the same config blocks as me-llama.json.
        foreach (var f in Directory.GetFiles(Path.Combine(SharedData.RepoRoot, "data-manifests"), "*.json"))
        {
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(f));
            string name = doc.RootElement.GetProperty("source").GetString()!;
            Assert.Contains(meLlama.Sources, s => s.Name == name);
        }
    }

    [Theory]
    [InlineData("{\"sources\": []}", "'sources' is empty")]
    [InlineData("{\"sources\": [{\"name\": \"a\", \"paths\": [\"x\"], \"format\": \"xml\", \"domain\": \"general\"}]}", "format 'xml'")]
    [InlineData("{\"sources\": [{\"name\": \"a\", \"paths\": [\"x\"], \"format\": \"csv\", \"domain\": \"legal\"}]}", "domain 'legal'")]
    [InlineData("{\"sources\": [{\"name\": \"a\", \"paths\": [\"x\"], \"format\": \"csv\", \"domain\": \"clinical\", \"sensitivity\": \"public\"}]}", "clinical sources are restricted")]
    [InlineData("{\"sources\": [{\"name\": \"a\", \"paths\": [\"x\"], \"format\": \"csv\", \"domain\": \"general\", \"onError\": \"ignore\"}]}", "onError")]
    [InlineData("{\"sauces\": []}", "sauces")]
    public void Bad_configs_are_rejected_with_a_clear_message(string json, string expected)
    {
        var e = Assert.ThrowsAny<Exception>(() => DataConfig.Parse(json, "/tmp"));
        Assert.Contains(expected, e.Message);
    }

    [SkippableFact]
    public void Shipped_demo_config_prepares_the_shared_sample_corpora()
    {
        SharedData.Require(SharedData.PubMedQa);
        using var tmp = new TempDir();
        var result = PrepareRunner.Run(DataConfig.Load(Path.Combine(ConfigDir, "demo.json")), TokenizerLoader.Load("gpt2"), new PrepareOptions(tmp["out"], 2));
        Assert.Equal(1000, result.Datasets.Single(d => d.Domain == "biomedical").Sources[0].Records);
        Assert.True(result.Datasets.Single(d => d.Domain == "clinical").Train.Documents > 1500);
    }
}
