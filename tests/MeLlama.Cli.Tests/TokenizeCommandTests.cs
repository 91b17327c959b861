using System.CommandLine;
using System.Text.Json;
using MeLlama.Cli.Commands;
using MeLlama.TestSupport;
using MeLlama.Tokenization;
using static MeLlama.Cli.Tests.InProcessCli;

namespace MeLlama.Cli.Tests;

public class TokenizeCommandTests
{
    static int[] Ids(JsonElement e) => e.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();

    [Fact]
    public void Gpt2TokenizesLinesKeepingOtherFields()
    {
        using var dir = new TempDir();
        string[] texts = ["Chest pain radiating to the left arm.", "SpO₂ 92% — dyspnoea ✓", ""];
        File.WriteAllLines(dir["in.jsonl"], texts.Select((t, i) => JsonSerializer.Serialize(new { id = $"doc-{i}", text = t, meta = new { n = i } })).Append(""));

        var (code, stdout, stderr) = Mellama("tokenize", "--tokenizer", "gpt2", "--input", dir["in.jsonl"], "--bos", "--eos", "-q");
        Assert.True(code == 0, stderr);
        var lines = ReadJsonLines(stdout);
        Assert.Equal(3, lines.Count);
        var tokenizer = TokenizerLoader.Load("gpt2");
        for (int i = 0; i < texts.Length; i++)
        {
            Assert.Equal($"doc-{i}", lines[i].GetProperty("id").GetString());
            Assert.Equal(texts[i], lines[i].GetProperty("text").GetString());
            Assert.Equal(i, lines[i].GetProperty("meta").GetProperty("n").GetInt32());
            Assert.Equal(tokenizer.Encode(texts[i], addBos: true, addEos: true), Ids(lines[i]));
        }
        Assert.Equal(["id", "text", "meta", "ids"], lines[0].EnumerateObject().Select(p => p.Name));
    }

    [SkippableFact]
    public void LlamaTokenizerModelGivesTheGoldenIds()
    {
        var model = SharedData.Require(SharedData.LlamaTokenizer);
        var golden = File.ReadLines(SharedData.Require(SharedData.TokenizerGolden)).Take(1000).ToList();
        using var dir = new TempDir();
        File.WriteAllLines(dir["in.jsonl"], golden);

        var (code, _, stderr) = Mellama("tokenize", "-t", model, "-i", dir["in.jsonl"], "-o", dir["out.jsonl"], "-q");
        Assert.True(code == 0, stderr);
        var expected = golden.Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();
        var actual = ReadJsonLines(File.ReadAllText(dir["out.jsonl"]));
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
        {
            Assert.Equal(expected[i].GetProperty("text").GetString(), actual[i].GetProperty("text").GetString());
            Assert.Equal(Ids(expected[i]), Ids(actual[i])); // the golden "ids" field is replaced by ours: they must agree
        }
    }

    [Fact]
    public void MalformedLineFailsWithItsLineNumberAndLeavesNoOutput()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir["in.jsonl"], ["{\"text\": \"fine\"}", "{\"text\": \"broken", "{\"text\": \"never reached\"}"]);

        var (code, _, stderr) = Mellama("tokenize", "--tokenizer", "gpt2", "--input", dir["in.jsonl"], "--output", dir["out.jsonl"], "-q");
        Assert.Equal(2, code);
        Assert.Contains("line 2", stderr);
        Assert.DoesNotContain("broken", stderr); // input text never echoed
        Assert.False(File.Exists(dir["out.jsonl"]));
        Assert.Empty(Directory.GetFiles(dir.Path, ".out.jsonl.tmp-*"));
    }

    [Fact]
    public void MissingTextFieldAndBadTokenizerAreUsageErrors()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir["in.jsonl"], ["{\"text\": \"ok\"}", "", "{\"body\": \"no text\"}"]);
        var (code, _, stderr) = Mellama("tokenize", "--tokenizer", "gpt2", "--input", dir["in.jsonl"], "-q");
        Assert.Equal(2, code);
        Assert.Contains("line 3", stderr);
        Assert.Contains("\"text\"", stderr);

        (code, _, stderr) = Mellama("tokenize", "--tokenizer", dir["missing.model"], "--input", dir["in.jsonl"], "-q");
        Assert.Equal(2, code);
        Assert.Contains("missing.model", stderr);
    }

    [Fact]
    public void RunSeparatesTheWorkFromTheConsole()
    {
        var tokenizer = TokenizerLoader.Load("gpt2");
        var output = new StringWriter();
        var counts = TokenizeCommand.Run(tokenizer, new StringReader("{\"text\":\"a b\"}\n{\"text\":\"c\",\"ids\":[9]}\n"), output, false, false);
        Assert.Equal(2, counts.Lines);
        var lines = ReadJsonLines(output.ToString());
        Assert.Equal(tokenizer.Encode("a b"), Ids(lines[0]));
        Assert.Equal(tokenizer.Encode("c"), Ids(lines[1]));
        Assert.Equal(counts.Tokens, tokenizer.Encode("a b").Length + tokenizer.Encode("c").Length);
    }
}
