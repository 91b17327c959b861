namespace MeLlama.Tokenization.Tests;

/// <summary>Ids must equal SentencePiece 0.1.97's for every line of the golden file.</summary>
public class LlamaGoldenTests
{
    [SkippableFact]
    public void EveryGoldenLineEncodesToSentencePiecesIds()
    {
        var tokenizer = TestCorpora.Llama();
        var golden = TestCorpora.Golden();
        Assert.Equal(160, golden.Count);
        var mismatches = golden
            .Where(g => !tokenizer.Encode(g.Text).SequenceEqual(g.Ids))
            .Select(g => $"line {g.Line}: expected [{string.Join(",", g.Ids.Take(12))}...] got [{string.Join(",", tokenizer.Encode(g.Text).Take(12))}...]")
            .ToList();
        Assert.True(mismatches.Count == 0, $"{mismatches.Count}/{golden.Count} golden lines differ:\n" + string.Join("\n", mismatches));
    }

    [SkippableFact]
    public void RunOf300XMergesHighestScoreLeftmostFirst()
    {
        // The case Microsoft.ML.Tokenizers 2.0.1 gets wrong (it merges equal-score pairs rightmost first).
        var tokenizer = TestCorpora.Llama();
        var golden = TestCorpora.Golden().Single(g => g.Text.Length == 300 && g.Text.All(c => c == 'x'));
        var ids = tokenizer.Encode(new string('x', 300));
        Assert.Equal(golden.Ids, ids);
        Assert.Equal("▁x", tokenizer.PieceText(ids[0]));
        Assert.Equal(string.Concat(Enumerable.Repeat("x", 299)), string.Concat(ids.Skip(1).Select(tokenizer.PieceText)));
    }

    [SkippableFact]
    public void GoldenTextsDecodeBackToThemselves()
    {
        var tokenizer = TestCorpora.Llama();
        foreach (var g in TestCorpora.Golden())
            Assert.Equal(g.Text, tokenizer.Decode(g.Ids));
    }
}
