using System.Text.Json;
using MeLlama.TestSupport;

namespace MeLlama.Tokenization.Tests;

public class TokenizerLoaderTests
{
    [SkippableFact]
    public void LoadsATokenizerModelPathAndTheFolderSaveHfFilesWrote()
    {
        var path = SharedData.Require(SharedData.LlamaTokenizer);
        var tokenizer = TokenizerLoader.Load(path);
        using var dir = new TempDir();
        tokenizer.SaveHfFiles(dir.Path, "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}");

        Assert.Equal(File.ReadAllBytes(path), File.ReadAllBytes(dir["tokenizer.model"]));
        using var config = JsonDocument.Parse(File.ReadAllText(dir["tokenizer_config.json"]));
        var root = config.RootElement;
        Assert.Equal("LlamaTokenizer", root.GetProperty("tokenizer_class").GetString());
        Assert.True(root.GetProperty("add_bos_token").GetBoolean());
        Assert.False(root.GetProperty("add_eos_token").GetBoolean());
        Assert.Equal("<s>", root.GetProperty("bos_token").GetString());
        Assert.Equal("</s>", root.GetProperty("eos_token").GetString());
        Assert.Equal("<unk>", root.GetProperty("unk_token").GetString());
        Assert.StartsWith("{{ bos_token }}", root.GetProperty("chat_template").GetString());
        using var special = JsonDocument.Parse(File.ReadAllText(dir["special_tokens_map.json"]));
        Assert.Equal("</s>", special.RootElement.GetProperty("eos_token").GetString());

        var reloaded = TokenizerLoader.TryLoadFromModelFolder(dir.Path);
        Assert.NotNull(reloaded);
        Assert.Equal(tokenizer.Fingerprint, reloaded.Fingerprint);
        Assert.Equal(tokenizer.Fingerprint, TokenizerLoader.Load(dir.Path).Fingerprint);
        Assert.Equal(tokenizer.Encode("Dyspnoea on exertion."), reloaded.Encode("Dyspnoea on exertion."));
    }

    [SkippableFact]
    public void SaveWithoutChatTemplateOmitsIt()
    {
        using var dir = new TempDir();
        TestCorpora.Llama().SaveHfFiles(dir.Path);
        using var config = JsonDocument.Parse(File.ReadAllText(dir["tokenizer_config.json"]));
        Assert.False(config.RootElement.TryGetProperty("chat_template", out _));
    }

    [Fact]
    public void Gpt2FolderHasHfVocabularyAndReloadsAsTheBuiltin()
    {
        var tokenizer = TokenizerLoader.Load("gpt2");
        using var dir = new TempDir();
        tokenizer.SaveHfFiles(dir.Path, null);

        using var vocab = JsonDocument.Parse(File.ReadAllText(dir["vocab.json"]));
        var ids = vocab.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt32());
        Assert.Equal(50257, ids.Count);
        Assert.Equal(50256, ids["<|endoftext|>"]);
        Assert.Equal(15496, ids["Hello"]);
        Assert.Equal(995, ids["\u0120world"]); // Ġ marks the leading space in GPT-2's spelling
        var merges = File.ReadAllLines(dir["merges.txt"]);
        Assert.Equal("#version: 0.2", merges[0]);
        Assert.Equal(50000, merges.Length - 1);
        // Merge i creates token 256 + i, both halves are tokens with lower ids.
        for (int i = 1; i < merges.Length; i++)
        {
            var parts = merges[i].Split(' ');
            Assert.Equal(2, parts.Length);
            Assert.Equal(255 + i, ids[parts[0] + parts[1]]);
            Assert.True(ids[parts[0]] < 255 + i && ids[parts[1]] < 255 + i);
        }
        using var config = JsonDocument.Parse(File.ReadAllText(dir["tokenizer_config.json"]));
        Assert.Equal("GPT2Tokenizer", config.RootElement.GetProperty("tokenizer_class").GetString());

        var reloaded = TokenizerLoader.TryLoadFromModelFolder(dir.Path);
        Assert.NotNull(reloaded);
        Assert.Equal(tokenizer.Fingerprint, reloaded.Fingerprint);
        Assert.Equal(tokenizer.Encode("fever and cough"), reloaded.Encode("fever and cough"));
    }

    [Fact]
    public void FolderWithoutTokenizerGivesNullAndBadSpecsSayWhy()
    {
        using var dir = new TempDir();
        Assert.Null(TokenizerLoader.TryLoadFromModelFolder(dir.Path));
        var missing = Assert.Throws<FileNotFoundException>(() => TokenizerLoader.Load(dir["nope.model"]));
        Assert.Contains("nope.model", missing.Message);
        Assert.Throws<FileNotFoundException>(() => TokenizerLoader.Load(dir.Path));
        File.WriteAllText(dir["tokenizer.json"], "{}");
        Assert.Throws<NotSupportedException>(() => TokenizerLoader.TryLoadFromModelFolder(dir.Path));
    }
}
