using MeLlama.Inference.Generation;

namespace MeLlama.Inference.Tests;

public class TokenSamplerTests
{
    static float[] Logits() => [0.5f, 2.0f, -1.0f, 1.5f, 0.0f, 1.9f];
    static readonly IReadOnlySet<int> Nothing = new HashSet<int>();

    [Fact]
    public void GreedyPicksArgmax() =>
        Assert.Equal(1, new TokenSampler(new GenerationOptions()).Next(Logits(), Nothing));

    [Fact]
    public void TopKOneAndTinyTopPAreGreedy()
    {
        for (ulong seed = 0; seed < 20; seed++)
        {
            Assert.Equal(1, new TokenSampler(new GenerationOptions { Temperature = 1.5, TopK = 1, Seed = seed }).Next(Logits(), Nothing));
            Assert.Equal(1, new TokenSampler(new GenerationOptions { Temperature = 1.5, TopP = 0.01, Seed = seed }).Next(Logits(), Nothing));
        }
    }

    [Fact]
    public void RepetitionPenaltyDemotesSeenTokens()
    {
        // 2.0 / 1.2 = 1.67 < 1.9: token 5 becomes the argmax; a negative logit is multiplied, not divided.
        var logits = Logits();
        Assert.Equal(5, new TokenSampler(new GenerationOptions { RepetitionPenalty = 1.2 }).Next(logits, new HashSet<int> { 1, 2 }));
        Assert.Equal(-1.2f, logits[2], 5);
    }

    [Fact]
    public void SameSeedSameTokensDifferentSeedDifferentStream()
    {
        int[] Draw(ulong seed)
        {
            var sampler = new TokenSampler(new GenerationOptions { Temperature = 1.0, Seed = seed });
            return Enumerable.Range(0, 50).Select(_ => sampler.Next(Logits(), Nothing)).ToArray();
        }
        Assert.Equal(Draw(7), Draw(7));
        Assert.NotEqual(Draw(7), Draw(8));
    }

    [Fact]
    public void SamplingFollowsTheSoftmaxRestrictedToTopK()
    {
        var options = new GenerationOptions { Temperature = 0.8, TopK = 3, Seed = 1 };
        var sampler = new TokenSampler(options);
        const int draws = 20000;
        var counts = new int[6];
        for (int i = 0; i < draws; i++) counts[sampler.Next(Logits(), Nothing)]++;
        // Top-3 by logit: ids 1 (2.0), 5 (1.9), 3 (1.5).
        double[] top = [2.0, 1.9, 1.5];
        double z = top.Sum(l => Math.Exp(l / 0.8));
        // Standard error of each frequency is ≤ 0.0035; 0.015 is over four of them.
        Assert.Equal(0, counts[0] + counts[2] + counts[4]);
        Assert.InRange(counts[1] / (double)draws - Math.Exp(2.0 / 0.8) / z, -0.015, 0.015);
        Assert.InRange(counts[5] / (double)draws - Math.Exp(1.9 / 0.8) / z, -0.015, 0.015);
        Assert.InRange(counts[3] / (double)draws - Math.Exp(1.5 / 0.8) / z, -0.015, 0.015);
    }

    [Fact]
    public void TopPKeepsTheSmallestNucleus()
    {
        // Probabilities at T=1: softmax of the logits; id 1 alone holds 0.34 and ids 1 and 5 hold 0.65, so top_p=0.5 keeps exactly those two.
        var sampler = new TokenSampler(new GenerationOptions { Temperature = 1.0, TopP = 0.5, Seed = 3 });
        var drawn = Enumerable.Range(0, 2000).Select(_ => sampler.Next(Logits(), Nothing)).ToHashSet();
        Assert.Equal(new HashSet<int> { 1, 5 }, drawn);
    }

    [Fact]
    public void InvalidOptionsAreRejected()
    {
        Assert.Throws<ArgumentException>(() => new TokenSampler(new GenerationOptions { TopP = 0 }));
        Assert.Throws<ArgumentException>(() => new TokenSampler(new GenerationOptions { Temperature = -1 }));
        Assert.Throws<ArgumentException>(() => new TokenSampler(new GenerationOptions { RepetitionPenalty = 0 }));
        Assert.Throws<ArgumentException>(() => new TokenSampler(new GenerationOptions { StopStrings = [""] }));
    }
}
