using MeLlama.TestSupport;
using MeLlama.Tokenization.SentencePiece;

namespace MeLlama.Tokenization.Tests;

public class LlamaTokenizerTests
{
    [SkippableFact]
    public void BosAndEosWrapTheTextIds()
    {
        var tokenizer = TestCorpora.Llama();
        Assert.Equal(1, tokenizer.BosId);
        Assert.Equal(2, tokenizer.EosId);
        Assert.Equal(32000, tokenizer.VocabSize);
        const string text = "Metformin lowers HbA1c.";
        var plain = tokenizer.Encode(text);
        Assert.Equal([1, .. plain], tokenizer.Encode(text, addBos: true));
        Assert.Equal([.. plain, 2], tokenizer.Encode(text, addEos: true));
        Assert.Equal([1, .. plain, 2], tokenizer.Encode(text, addBos: true, addEos: true));
        Assert.Equal([1, 2], tokenizer.Encode("", addBos: true, addEos: true));
        Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text, true, true)));
    }

    [SkippableFact]
    public void ControlPieceTextIsOrdinaryText()
    {
        var tokenizer = TestCorpora.Llama();
        var ids = tokenizer.Encode("a </s> b <s>");
        Assert.DoesNotContain(tokenizer.BosId, ids);
        Assert.DoesNotContain(tokenizer.EosId, ids);
        Assert.Equal("a </s> b <s>", tokenizer.Decode(ids));
    }

    [SkippableFact]
    public void AbstractsRoundTripThroughDecode()
    {
        var tokenizer = TestCorpora.Llama();
        foreach (var text in TestCorpora.PubMedQaAbstracts(200))
            Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
    }

    [SkippableFact]
    public void FastEncoderAgreesWithNaiveReferenceOnAbstractsAndAdversarialText()
    {
        var tokenizer = TestCorpora.Llama();
        var model = SentencePieceModelFile.Read(SharedData.Require(SharedData.LlamaTokenizer));
        var reference = new ReferenceSentencePieceBpe(model);
        // The reference is quadratic: abstract prefixes keep the test fast while covering real text.
        var texts = TestCorpora.PubMedQaAbstracts(40).Select(t => t[..Math.Min(t.Length, 400)]).ToList();
        var random = new Random(1234);
        const string alphabet = "aaabxyz  \u2581\t\n.,-0123456789éü°₂✓患者🫀\u00a0";
        for (int i = 0; i < 300; i++)
        {
            var chars = new List<char>();
            int length = random.Next(0, 40);
            while (chars.Count < length)
            {
                int k = random.Next(alphabet.Length);
                if (char.IsHighSurrogate(alphabet[k])) { chars.Add(alphabet[k]); chars.Add(alphabet[k + 1]); }
                else if (!char.IsLowSurrogate(alphabet[k])) chars.Add(alphabet[k]);
            }
            texts.Add(new string([.. chars]));
        }
        texts.AddRange(["xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx xxxxx", new string(' ', 40) + "a" + new string(' ', 17), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "......................", "\u2581\u2581hi",
            // Real abstracts where Microsoft.ML.Tokenizers 2.0.1 differs: SentencePiece gives BB|B, the library B|BB.
            "(ABBB) per", "(AAA) repair", "(SSS) and (PPD). FFFs"]);
        foreach (var text in texts)
            Assert.Equal(reference.Encode(text), tokenizer.Encode(text));
    }

    [SkippableFact]
    public void LlamaVocabularyAllowsSegmentWiseEncoding()
    {
        var tokenizer = TestCorpora.Llama();
        Assert.True(tokenizer.Encoder.SegmentsIndependently);
        Assert.True(tokenizer.Encoder.PairCount > 31000);
    }

    [SkippableFact]
    public void ParallelEncodingEqualsSerialEncoding()
    {
        var tokenizer = TestCorpora.Llama();
        var texts = TestCorpora.PubMedQaAbstracts(400);
        texts.AddRange(TestCorpora.Golden().Select(g => g.Text));
        var serial = texts.Select(t => tokenizer.Encode(t, true, true)).ToArray();
        var parallel = new int[texts.Count][];
        for (int round = 0; round < 3; round++)
        {
            Parallel.For(0, texts.Count, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i => parallel[i] = tokenizer.Encode(texts[i], true, true));
            for (int i = 0; i < texts.Count; i++) Assert.Equal(serial[i], parallel[i]);
        }
    }

    [SkippableFact]
    public void FingerprintIsSha256OfTheModelFile()
    {
        var path = SharedData.Require(SharedData.LlamaTokenizer);
        Assert.Equal(MeLlama.Core.IO.AtomicFile.Sha256File(path), TestCorpora.Llama().Fingerprint);
    }

    [SkippableFact]
    public void DecodeRejectsIdsOutsideTheVocabulary()
    {
        var tokenizer = TestCorpora.Llama();
        Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.Decode([5, 32000]));
        Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.Decode([-1]));
    }

    [Fact]
    public void NonSentencePieceBytesAreRejectedWithAClearError()
    {
        var e = Assert.ThrowsAny<Exception>(() => LlamaSentencePieceTokenizer.FromBytes("{\"not\": \"a model\"}"u8.ToArray(), "bogus.model"));
        Assert.Contains("bogus.model", e.Message);
    }
}
