using MeLlama.Inference.Generation;

namespace MeLlama.Inference.Tests;

public class StreamingTextDecoderTests
{
    [SkippableFact]
    public void IncrementalTextEqualsFullDecodeAndNeverShowsBrokenCharacters()
    {
        var tok = TestModels.LlamaTokenizer();
        // Accents, CJK and an emoji: the latter two need several byte-fallback tokens per character.
        string text = "Patient: 68岁 männlich, SpO₂ 92% 😷 — Dx: pneumonía.\nPlan: amoxicilina 1 g.";
        int[] ids = tok.Encode(text);
        var decoder = new StreamingTextDecoder(tok);
        var pieces = ids.Select(decoder.Push).ToList();
        pieces.Add(decoder.Flush());
        Assert.All(pieces, p => Assert.DoesNotContain('\uFFFD', p));
        Assert.Equal(tok.Decode(ids), string.Concat(pieces));
        Assert.Contains(pieces, p => p.Length == 0);   // some tokens were held back (partial characters)
    }

    [SkippableFact]
    public void StopStringCutsTheTextAndIsNeverShown()
    {
        var tok = TestModels.LlamaTokenizer();
        int[] ids = tok.Encode("The answer is yes.\n### Human: next question");
        var decoder = new StreamingTextDecoder(tok, ["### Human:"]);
        var shown = new System.Text.StringBuilder();
        int consumed = 0;
        foreach (int id in ids)
        {
            shown.Append(decoder.Push(id));
            consumed++;
            if (decoder.Stopped) break;
        }
        shown.Append(decoder.Flush());
        Assert.True(decoder.Stopped);
        Assert.Equal("### Human:", decoder.StopString);
        Assert.Equal("The answer is yes.\n", shown.ToString());
        Assert.Equal("The answer is yes.\n", decoder.Text);
        Assert.True(consumed < ids.Length);
    }

    [SkippableFact]
    public void TextThatOnlyLooksLikeAStopStringPrefixIsReleasedAtTheEnd()
    {
        var tok = TestModels.LlamaTokenizer();
        int[] ids = tok.Encode("Dose: 5 mg ##");
        var decoder = new StreamingTextDecoder(tok, ["###"]);
        string streamed = string.Concat(ids.Select(decoder.Push));
        Assert.False(streamed.EndsWith("##", StringComparison.Ordinal));
        Assert.Equal(tok.Decode(ids), streamed + decoder.Flush());
        Assert.False(decoder.Stopped);
    }

    /// <summary>
    /// A word piece right after a byte-fallback piece keeps its space: ids 69 (byte 0x42, "B") then 22474 ("▁DLL")
    /// decode to "…B DLL"; a decoder that re-decoded only a window starting at the byte piece printed "BDLL".
    /// </summary>
    [SkippableFact]
    public void AWordPieceAfterAByteFallbackPieceKeepsItsSpace()
    {
        var tok = TestModels.LlamaTokenizer();
        int[][] sequences = [[16751, 69, 22474, 11460], [6154, 69, 22474], [69, 69, 22474, 338]];
        foreach (var ids in sequences)
        {
            var decoder = new StreamingTextDecoder(tok);
            string streamed = string.Concat(ids.Select(decoder.Push)) + decoder.Flush();
            Assert.Equal(tok.Decode(ids), streamed);
            Assert.Equal(tok.Decode(ids), decoder.Text);
        }
        Assert.Contains("B DLL", tok.Decode([16751, 69, 22474]));
    }
}
