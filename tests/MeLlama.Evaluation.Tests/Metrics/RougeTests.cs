using MeLlama.Evaluation.Metrics;

namespace MeLlama.Evaluation.Tests.Metrics;

/// <summary>
/// Values below are either computed by hand (small examples) or the ROUGE-1.5.5 reference numbers that
/// Google's rouge-score test-suite asserts for the first two lines of its testdata (target.txt /
/// prediction.txt), which are deliberately noisy strings that exercise the tokenizer.
/// </summary>
public class RougeTests
{
    const string Target0 = "ZfbCUIUuePaiLVUlCaUXxkpu XPeWing tUHfPMuZ',-Xd Y BrUgVJing M-HV.-DgdDaY.rFDJCRing Ht-LM EKBDXkME,yz'RBr q'wtion wIojNbN wL,b .a-'XdQggyFl jB-RPP'iyOIcUxer tKM L";
    const string Prediction0 = "rFDJCRtion Ht-LM EKtDXkME,yz'RBr q'wer wrojNbN wL,b .a-'XdQggyFl jB-RPP'iyOIcUxi";
    const string Target1 = "KsJdPByEtAor fE-Qg Dpdbring cw-WeFyu vC MoBL Xdn g wkvcEiGvKtion BDFhrpMtion psing sbKao Q m qiing LMmer HqqLFXe,XPY,J XsurkMer ,ed nB'wH'bWVHjWFEing tQ.saefZwJtKrTlixYpMMsJing UCAPwNHeYVjDing c T BUySKtion gMPfJpwGw p'NvxAoping eu pBwMBKV'I DNxqelhu,PHPxDEq,mtion SN";
    const string Prediction1 = "n cw-WeFyu vC MoBL Xdn g wkvcEiGvKtion BDFhrpMer pstion sbKao Q m qier LMmed HqqLFXe,XPY,J XsurkMeo ,ed nB'wH'bWVHjWFEer tQ.saefZwJtKrTlixYpMMNJtion UCAPwNHeYVjD";

    [Fact]
    public void Tokenizer_lowercases_and_splits_on_non_alphanumerics()
    {
        Assert.Equal(["the", "ct", "scan", "2024", "showed", "a", "b"], new RougeScorer().Tokenize("The CT-scan (2024) showed: a/b!"));
        Assert.Empty(new RougeScorer().Tokenize("--- ..."));
    }

    [Fact]
    public void Hand_computed_small_examples()
    {
        var scorer = new RougeScorer();
        // reference "testing one two", prediction "testing": unigram P 1, R 1/3, F 1/2
        var s = scorer.Score("testing one two", "testing");
        Assert.Equal(1, s.Rouge1.Precision, 12);
        Assert.Equal(1.0 / 3, s.Rouge1.Recall, 12);
        Assert.Equal(0.5, s.Rouge1.F1, 12);
        // bigrams of "testing one" ⊂ bigrams of "testing one two": P 1, R 1/2, F 2/3
        s = scorer.Score("testing one two", "testing one");
        Assert.Equal(2.0 / 3, s.Rouge2.F1, 12);
        // LCS("testing one two", "testing two") = 2: P 1, R 2/3, F 4/5 (non-consecutive match)
        s = scorer.Score("testing one two", "testing two");
        Assert.Equal(0.8, s.RougeL.F1, 12);
        Assert.Equal(0, s.Rouge2.Recall - 0, 12); // no shared bigram ("testing two" is not in the reference)
        // empty prediction -> all zero
        s = scorer.Score("testing one two", "");
        Assert.Equal(0, s.Rouge1.F1);
        Assert.Equal(0, s.RougeL.F1);
    }

    [Fact]
    public void Counts_are_clipped_and_lcs_differs_from_bag_overlap()
    {
        // ref "the cat the cat", pred "the the the": unigram overlap min(3,2)=2 -> P 2/3, R 2/4
        var s = new RougeScorer().Score("the cat the cat", "the the the");
        Assert.Equal(2.0 / 3, s.Rouge1.Precision, 12);
        Assert.Equal(0.5, s.Rouge1.Recall, 12);
        // ref "a b c d", pred "d c b a": every unigram matches but the LCS is 1 -> ROUGE-L F 1/4
        s = new RougeScorer().Score("a b c d", "d c b a");
        Assert.Equal(1, s.Rouge1.F1, 12);
        Assert.Equal(0.25, s.RougeL.F1, 12);
    }

    [Fact]
    public void Matches_rouge_155_reference_values_without_stemming()
    {
        var scorer = new RougeScorer(useStemmer: false);
        var s0 = scorer.Score(Target0, Prediction0);
        Assert.Equal(0.40741, s0.Rouge1.Recall, 5);
        Assert.Equal(0.68750, s0.Rouge1.Precision, 5);
        Assert.Equal(0.51163, s0.Rouge1.F1, 5);
        Assert.Equal(0.30769, s0.Rouge2.Recall, 5);
        Assert.Equal(0.53333, s0.Rouge2.Precision, 5);
        Assert.Equal(0.39024, s0.Rouge2.F1, 5);
        Assert.Equal(0.51163, s0.RougeL.F1, 5);
        var s1 = scorer.Score(Target1, Prediction1);
        Assert.Equal(0.40476, s1.Rouge1.Recall, 5);
        Assert.Equal(0.65385, s1.Rouge1.Precision, 5);
        Assert.Equal(0.50000, s1.Rouge1.F1, 5);
        Assert.Equal(0.36364, s1.Rouge2.F1, 5);
        Assert.Equal(0.40476, s1.RougeL.Recall, 5);
        Assert.Equal(0.65385, s1.RougeL.Precision, 5);
    }

    [Fact]
    public void Matches_rouge_155_reference_values_with_porter_stemming()
    {
        var scorer = new RougeScorer(useStemmer: true);
        var s1 = scorer.Score(Target1, Prediction1);
        Assert.Equal(0.42857, s1.Rouge1.Recall, 5);
        Assert.Equal(0.69231, s1.Rouge1.Precision, 5);
        Assert.Equal(0.52941, s1.Rouge1.F1, 5);
        Assert.Equal(0.36364, s1.Rouge2.F1, 5);
        var s0 = scorer.Score(Target0, Prediction0);
        Assert.Equal(0.51163, s0.Rouge1.F1, 5);
    }

    [Theory]
    [InlineData("caresses", "caress")]
    [InlineData("ponies", "poni")]
    [InlineData("cats", "cat")]
    [InlineData("feed", "feed")]
    [InlineData("motoring", "motor")]
    [InlineData("sing", "sing")]
    [InlineData("hopping", "hop")]
    [InlineData("falling", "fall")]
    [InlineData("filing", "file")]
    [InlineData("happy", "happi")]
    [InlineData("enjoy", "enjoy")]
    [InlineData("dies", "die")]
    [InlineData("spied", "spi")]
    [InlineData("relational", "relat")]
    [InlineData("conditional", "condit")]
    [InlineData("generalization", "gener")]
    [InlineData("happiness", "happi")]
    [InlineData("hopefulness", "hope")]
    [InlineData("electrical", "electr")]
    [InlineData("adjustment", "adjust")]
    [InlineData("dependent", "depend")]
    [InlineData("adoption", "adopt")]
    [InlineData("probate", "probat")]
    [InlineData("rate", "rate")]
    [InlineData("cease", "ceas")]
    [InlineData("controll", "control")]
    [InlineData("roll", "roll")]
    [InlineData("skies", "sky")]
    public void Porter_stemmer_follows_the_paper_and_nltk_extensions(string word, string stem) =>
        Assert.Equal(stem, PorterStemmer.Stem(word));
}
