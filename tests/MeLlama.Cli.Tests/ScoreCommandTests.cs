using System.CommandLine;
using System.Text.Json;
using MeLlama.Model;
using MeLlama.TestSupport;
using MeLlama.Tokenization;
using static TorchSharp.torch;
using static MeLlama.Cli.Tests.InProcessCli;

namespace MeLlama.Cli.Tests;

public class ScoreCommandTests
{
    static double[] Numbers(JsonElement e, string field) => e.GetProperty(field).EnumerateArray().Select(x => x.GetDouble()).ToArray();

    [SkippableFact]
    public void Scores_the_fixture_reference_sequences_end_to_end()
    {
        string fixture = SharedData.Require(SharedData.TinyLlamaBf16Sharded);
        string referenceFile = Path.Combine(fixture, "reference.jsonl");
        using var dir = new TempDir();

        var (code, _, stderr) = Mellama("score", "--model", fixture, "--input", referenceFile, "--output", dir["scores.jsonl"], "-q");
        Assert.True(code == 0, stderr);
        var reference = ReadJsonLines(File.ReadAllText(referenceFile));
        var scored = ReadJsonLines(File.ReadAllText(dir["scores.jsonl"]));
        Assert.Equal(reference.Count, scored.Count);
        for (int s = 0; s < reference.Count; s++)
        {
            Assert.Equal(reference[s].GetProperty("id").GetInt32(), scored[s].GetProperty("id").GetInt32());
            var expected = Numbers(reference[s], "logprobs");
            var actual = Numbers(scored[s], "logprobs");   // the reference's own "logprobs" field is replaced by ours
            Assert.Equal(expected.Length, actual.Length);
            for (int i = 0; i < expected.Length; i++)
                Assert.True(Math.Abs(expected[i] - actual[i]) < 1e-3, $"sequence {s} token {i}: {actual[i]} vs {expected[i]}");
            Assert.Equal(reference[s].GetProperty("sum_logprob").GetDouble(), scored[s].GetProperty("sum_logprob").GetDouble(), 1e-2);
        }
    }

    [SkippableFact]
    public void Text_lines_use_the_model_folders_tokenizer_with_bos()
    {
        string fixture = SharedData.Require(SharedData.TinyLlama);
        var tokenizer = TokenizerLoader.Load(SharedData.Require(SharedData.LlamaTokenizer));
        using var dir = new TempDir();
        // An HF folder = the fixture's weights re-exported + the LLaMA tokenizer files.
        using (var model = HfCheckpoint.LoadModel(fixture))
            HfCheckpoint.Save(model, dir["hf"], ScalarType.Float32, writeExtraFiles: folder => tokenizer.SaveHfFiles(folder));
        string text = "Metformin is first-line therapy for type 2 diabetes.";
        File.WriteAllLines(dir["in.jsonl"], [JsonSerializer.Serialize(new { id = "q1", text })]);

        var (code, stdout, stderr) = Mellama("score", "-m", dir["hf"], "-i", dir["in.jsonl"], "-q");
        Assert.True(code == 0, stderr);
        var line = Assert.Single(ReadJsonLines(stdout));
        Assert.Equal("q1", line.GetProperty("id").GetString());
        Assert.Equal(text, line.GetProperty("text").GetString());
        int[] expectedTokens = tokenizer.Encode(text, addBos: true);
        Assert.Equal(expectedTokens, line.GetProperty("tokens").EnumerateArray().Select(t => t.GetInt32()));
        using var reloaded = HfCheckpoint.LoadModel(dir["hf"]);
        var expected = Scoring.NextTokenLogProbs(reloaded, expectedTokens);
        Assert.Equal(expected, line.GetProperty("logprobs").EnumerateArray().Select(x => x.GetSingle()).ToArray());   // float text round-trips exactly
    }

    [SkippableFact]
    public void Bf16_dtype_scores_close_to_fp32()
    {
        string fixture = SharedData.Require(SharedData.TinyLlama);
        using var dir = new TempDir();
        File.WriteAllLines(dir["in.jsonl"], [File.ReadLines(Path.Combine(fixture, "reference.jsonl")).First()]);
        var fp32 = Mellama("score", "-m", fixture, "-i", dir["in.jsonl"], "--dtype", "fp32", "-q");
        var bf16 = Mellama("score", "-m", fixture, "-i", dir["in.jsonl"], "--dtype", "bf16", "-q");
        Assert.True(fp32.ExitCode == 0 && bf16.ExitCode == 0, fp32.Stderr + bf16.Stderr);
        var a = Numbers(ReadJsonLines(fp32.Stdout)[0], "logprobs");
        var b = Numbers(ReadJsonLines(bf16.Stdout)[0], "logprobs");
        Assert.True(a.Zip(b, (x, y) => Math.Abs(x - y)).Average() < 0.1);
    }

    [SkippableTheory]
    [InlineData("{\"tokens\": [1, 2, \"three\"]}", "line 2", "\"tokens\"[2]")]
    [InlineData("{\"tokens\": [1, 2, 32000]}", "line 2", "outside the vocabulary")]
    [InlineData("{\"id\": 7}", "line 2", "\"tokens\" list or a \"text\"")]
    [InlineData("{\"text\": \"chest pain\"}", "line 2", "no tokenizer")]
    [InlineData("{\"tokens\": [1, 2", "line 2", "not valid JSON")]
    public void Bad_input_fails_with_the_line_number_exit_2_and_no_output(string badLine, string expectedLine, string expectedReason)
    {
        string fixture = SharedData.Require(SharedData.TinyLlama);
        using var dir = new TempDir();
        File.WriteAllLines(dir["in.jsonl"], ["{\"tokens\": [1, 450, 22191]}", badLine, "{\"tokens\": [1, 2]}"]);
        var (code, _, stderr) = Mellama("score", "-m", fixture, "-i", dir["in.jsonl"], "-o", dir["out.jsonl"], "-q");
        Assert.Equal(2, code);
        Assert.Contains(expectedLine, stderr);
        Assert.Contains(expectedReason, stderr);
        Assert.DoesNotContain("chest pain", stderr);   // input text never echoed
        Assert.False(File.Exists(dir["out.jsonl"]));
    }

    [Fact]
    public void Missing_model_folder_or_bad_dtype_exit_2()
    {
        using var dir = new TempDir();
        var missing = Mellama("score", "-m", dir["nope"], "-q");
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("config.json", missing.Stderr);
        var dtype = Mellama("score", "-m", dir["nope"], "--dtype", "int8", "-q");
        Assert.Equal(2, dtype.ExitCode);
        Assert.Contains("int8", dtype.Stderr);
    }
}
