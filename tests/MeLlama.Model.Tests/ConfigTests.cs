using MeLlama.TestSupport;

namespace MeLlama.Model.Tests;

public class ConfigTests
{
    [SkippableFact]
    public void Reads_the_fixture_config()
    {
        var config = LlamaConfig.FromHfJson(Path.Combine(SharedData.Require(SharedData.TinyLlama), "config.json"));
        Assert.Equal(64, config.HiddenSize);
        Assert.Equal(2, config.NumLayers);
        Assert.Equal(4, config.NumHeads);
        Assert.Equal(2, config.NumKvHeads);
        Assert.Equal(176, config.IntermediateSize);
        Assert.Equal(32000, config.VocabSize);
        Assert.Equal(1e-5, config.RmsNormEps);
        Assert.Equal(10000.0, config.RopeTheta);
        Assert.False(config.TieWordEmbeddings);
        Assert.Equal(4096, config.MaxPositionEmbeddings);
        Assert.Equal((1, 2), (config.BosTokenId, config.EosTokenId));
    }

    [Fact]
    public void Hf_json_round_trips_every_field()
    {
        using var dir = new TempDir();
        var config = LlamaConfig.Llama2_70B with { TieWordEmbeddings = true, RopeTheta = 500000, RmsNormEps = 1e-6, BosTokenId = 5, EosTokenId = 6, MaxPositionEmbeddings = 8192 };
        File.WriteAllText(dir["config.json"], config.ToHfJson("bfloat16"));
        Assert.Equal(config, LlamaConfig.FromHfJson(dir["config.json"]));
        string text = File.ReadAllText(dir["config.json"]);
        Assert.Contains("\"LlamaForCausalLM\"", text);
        Assert.Contains("\"model_type\": \"llama\"", text);
        Assert.Contains("\"torch_dtype\": \"bfloat16\"", text);
    }

    [Fact]
    public void Missing_kv_heads_means_multi_head_and_eos_list_takes_the_first()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["config.json"], """
            {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64,
             "vocab_size": 100, "eos_token_id": [7, 8]}
            """);
        var config = LlamaConfig.FromHfJson(dir["config.json"]);
        Assert.Equal(4, config.NumKvHeads);
        Assert.Equal(7, config.EosTokenId);
    }

    [Theory]
    [InlineData("""{"num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 100}""", "hidden_size")]
    [InlineData("""{"hidden_size": "big", "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 100}""", "hidden_size")]
    [InlineData("""{"hidden_size": 30, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 100}""", "multiple of NumHeads")]
    [InlineData("""{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 3, "intermediate_size": 64, "vocab_size": 100}""", "NumKvHeads")]
    [InlineData("""{"model_type": "mistral", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 100}""", "model_type")]
    [InlineData("""{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 100, "rope_scaling": {"type": "linear", "factor": 2.0}}""", "rope_scaling")]
    [InlineData("""not json""", "JSON")]
    [InlineData("""{"hidden_size": 32, "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 100}""", "JSON")]
    [InlineData("""{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 100, "attention_bias": "no"}""", "attention_bias")]
    public void Bad_configs_are_refused_naming_the_file_and_field(string json, string expectedInMessage)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["config.json"], json);
        var error = Assert.Throws<InvalidDataException>(() => LlamaConfig.FromHfJson(dir["config.json"]));
        Assert.Contains("config.json", error.Message);
        Assert.Contains(expectedInMessage, error.Message);
    }
}
