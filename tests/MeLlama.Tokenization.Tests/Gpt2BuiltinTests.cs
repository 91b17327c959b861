namespace MeLlama.Tokenization.Tests;

public class Gpt2BuiltinTests
{
    static readonly Lazy<Gpt2BuiltinTokenizer> Shared = new(() => new Gpt2BuiltinTokenizer());

    [Fact]
    public void BuiltinNeedsNoDownloadAndMatchesGpt2()
    {
        var tokenizer = TokenizerLoader.Load("gpt2");
        Assert.Equal(50257, tokenizer.VocabSize);
        Assert.Equal(50256, tokenizer.BosId);
        Assert.Equal(50256, tokenizer.EosId);
        Assert.Equal(64, tokenizer.Fingerprint.Length);
        // GPT-2's published ids for "Hello world".
        Assert.Equal([15496, 995], tokenizer.Encode("Hello world"));
        Assert.Equal([50256, 15496, 995, 50256], tokenizer.Encode("Hello world", addBos: true, addEos: true));
    }

    [Theory]
    [InlineData("Temp 38.5°C, SpO₂ 92% — dyspnoea ✓")]
    [InlineData("  leading and trailing  \n\tindented")]
    [InlineData("emoji 🫀🩺 and naïve café 患者主诉胸痛三天。")]
    [InlineData("")]
    public void RoundTripsThroughDecode(string text)
    {
        var tokenizer = Shared.Value;
        Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
        Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text, true, true)).Replace(Gpt2BuiltinTokenizer.EndOfText, ""));
    }

    [Fact]
    public void ParallelEncodingEqualsSerialEncoding()
    {
        var tokenizer = Shared.Value;
        var texts = Enumerable.Range(0, 300).Select(i => $"Patient {i} received {i % 7} mg of drug {(char)('A' + i % 26)}; outcome {(i % 3 == 0 ? "improved" : "stable")}.").ToArray();
        var serial = texts.Select(t => tokenizer.Encode(t)).ToArray();
        var parallel = new int[texts.Length][];
        Parallel.For(0, texts.Length, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i => parallel[i] = tokenizer.Encode(texts[i]));
        for (int i = 0; i < texts.Length; i++) Assert.Equal(serial[i], parallel[i]);
    }
}
