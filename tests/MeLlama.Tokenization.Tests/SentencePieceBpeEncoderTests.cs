using MeLlama.TestSupport;
using MeLlama.Tokenization.SentencePiece;

namespace MeLlama.Tokenization.Tests;

public class SentencePieceBpeEncoderTests
{
    [SkippableFact]
    public void SegmentCacheNeverChangesIds()
    {
        var model = SentencePieceModelFile.Read(SharedData.Require(SharedData.LlamaTokenizer));
        var uncached = new SentencePieceBpeEncoder(model, segmentCacheCapacity: 0);
        var tiny = new SentencePieceBpeEncoder(model, segmentCacheCapacity: 8); // evicts constantly
        var normal = new SentencePieceBpeEncoder(model);
        var texts = TestCorpora.PubMedQaAbstracts(150);
        texts.AddRange(TestCorpora.Golden().Select(g => g.Text));
        for (int pass = 0; pass < 2; pass++)
        {
            foreach (var text in texts)
            {
                var expected = uncached.Encode(text);
                Assert.Equal(expected, tiny.Encode(text));
                Assert.Equal(expected, normal.Encode(text));
            }
        }
    }

    /// <summary>
    /// A made-up model where a piece ("a▁b") spans a word boundary, so the text cannot be cut into
    /// independent segments, and without byte fallback (unknown runs collapse into one &lt;unk&gt;).
    /// </summary>
    static SentencePieceModelFile SyntheticModel() => new()
    {
        ModelType = 2,
        ByteFallback = false,
        UnkId = 0, BosId = 1, EosId = 2,
        NormalizerName = "identity",
        RemoveExtraWhitespaces = false,
        Pieces =
        [
            new("<unk>", 0, PieceType.Unknown), new("<s>", 0, PieceType.Control), new("</s>", 0, PieceType.Control),
            new("▁", -5, PieceType.Normal), new("a", -5, PieceType.Normal), new("b", -5, PieceType.Normal),
            new("aa", -1, PieceType.Normal), new("▁a", -2, PieceType.Normal), new("a▁", -2, PieceType.Normal),
            new("a▁b", -0.5f, PieceType.Normal), new("ab", -3, PieceType.Normal), new("aaa", -1, PieceType.Normal),
            new("▁▁", -4, PieceType.Normal), new("bb", -2, PieceType.Normal), new("▁b", -3, PieceType.Normal),
        ],
    };

    [Fact]
    public void WholeTextModeMatchesTheReferenceWhenPiecesCrossWordBoundaries()
    {
        var model = SyntheticModel();
        var encoder = new SentencePieceBpeEncoder(model);
        Assert.False(encoder.SegmentsIndependently);
        var reference = new ReferenceSentencePieceBpe(model);
        var random = new Random(7);
        const string alphabet = "aab  xé";
        for (int i = 0; i < 2000; i++)
        {
            var text = new string(Enumerable.Range(0, random.Next(0, 14)).Select(_ => alphabet[random.Next(alphabet.Length)]).ToArray());
            Assert.Equal(reference.Encode(text), encoder.Encode(text));
        }
        Assert.Equal([0], encoder.Encode("xéx").Skip(1)); // "▁" then one <unk> for the whole unknown run
    }

    [Fact]
    public void UnsupportedModelsAreRejectedAtLoad()
    {
        var model = SyntheticModel();
        Assert.Throws<NotSupportedException>(() => new SentencePieceBpeEncoder(new SentencePieceModelFile { Pieces = model.Pieces, ModelType = 1 }));
        Assert.Throws<NotSupportedException>(() => new SentencePieceBpeEncoder(new SentencePieceModelFile { Pieces = model.Pieces, ModelType = 2, PrecompiledCharsMapLength = 100, NormalizerName = "nmt_nfkc" }));
        Assert.Throws<NotSupportedException>(() => new SentencePieceBpeEncoder(new SentencePieceModelFile { Pieces = [.. model.Pieces, new("<mask>", 0, PieceType.UserDefined)], ModelType = 2 }));
    }

    [SkippableFact]
    public void ModelFileReaderSeesLlamaSettings()
    {
        var model = SentencePieceModelFile.Read(SharedData.Require(SharedData.LlamaTokenizer));
        Assert.Equal(2, model.ModelType);
        Assert.True(model.ByteFallback);
        Assert.Equal((0, 1, 2, -1), (model.UnkId, model.BosId, model.EosId, model.PadId));
        Assert.Equal("identity", model.NormalizerName);
        Assert.True(model.AddDummyPrefix);
        Assert.False(model.RemoveExtraWhitespaces);
        Assert.Equal(256, model.Pieces.Count(p => p.Type == PieceType.Byte));
        Assert.Equal(("▁t", -1f), (model.Pieces[260].Text, model.Pieces[260].Score));
    }
}
