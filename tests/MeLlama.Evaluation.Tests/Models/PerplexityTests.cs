using MeLlama.Evaluation.Models;
using MeLlama.Evaluation.Perplexity;

namespace MeLlama.Evaluation.Tests.Models;

public class PerplexityTests(TinyLlamaFixture fixture) : IClassFixture<TinyLlamaFixture>
{
    [SkippableFact]
    public void Perplexity_is_exp_of_mean_reference_nll_over_windows()
    {
        var (tokens, logProbs) = TinyLlamaFixture.Reference()[1];   // 96 tokens
        var lm = new LlamaCausalLanguageModel(fixture.Model, "tiny");
        // Windows of 20 tokens with stride 19: tokens 0..19, 19..38, ... -> (96-1)/19 = 5 windows, 95 scored tokens.
        var source = new TokenListWindowSource("pubmed", tokens, 20);
        Assert.Equal(5, source.Count);
        var result = PerplexityEvaluator.Evaluate(lm, source, batchSize: 2, bootstrapResamples: 200);
        Assert.Equal(95, result.Tokens);
        // Each window restarts the context, so the reference (whole-sequence) log-probs only apply to each
        // window's first scored token onwards when recomputed per window: score windows independently.
        double nll = 0;
        for (int w = 0; w < 5; w++)
        {
            var window = tokens.Skip(w * 19).Take(20).ToArray();
            nll -= MeLlama.Model.Scoring.NextTokenLogProbs(fixture.Model, window).Sum(v => (double)v);
        }
        Assert.Equal(nll / 95, result.MeanNll, 1e-4);
        Assert.Equal(Math.Exp(nll / 95), result.Perplexity, 1e-2);
        Assert.True(result.PerplexityLower <= result.Perplexity && result.Perplexity <= result.PerplexityUpper);
        // First window coincides with the reference's first 19 predictions.
        var first = lm.TokenLogProbs([new ScoringSpan(tokens[..20], 1)])[0];
        for (int i = 0; i < 19; i++) Assert.Equal(logProbs[i], first[i], 2e-3);
        // A random model over a 32k vocabulary: perplexity far above 1.
        Assert.InRange(result.Perplexity, 100, 1e7);
        var capped = PerplexityEvaluator.Evaluate(lm, source, maxWindows: 2, bootstrapResamples: 0);
        Assert.Equal(38, capped.Tokens);
    }
}

public class ModelFingerprintTests
{
    [Fact]
    public void Fingerprint_is_a_full_content_hash_remembered_per_folder_state()
    {
        using var dir = new MeLlama.TestSupport.TempDir();
        Directory.CreateDirectory(dir["m"]);
        File.WriteAllText(dir["m/config.json"], "{}");
        var weights = new byte[1 << 20];
        weights[1 << 19] = 1;
        File.WriteAllBytes(dir["m/model.safetensors"], weights);
        string a = ModelFingerprint.Compute(dir["m"], dir["memo"]);
        Assert.Equal(a, ModelFingerprint.Compute(dir["m"], dir["memo"]));
        Assert.Equal(a, ModelFingerprint.Compute(dir["m"]));
        // One byte in the middle, same size: a different model.
        weights[1 << 19] = 2;
        File.WriteAllBytes(dir["m/model.safetensors"], weights);
        File.SetLastWriteTimeUtc(dir["m/model.safetensors"], DateTime.UtcNow.AddMinutes(1));
        Assert.NotEqual(a, ModelFingerprint.Compute(dir["m"], dir["memo"]));
        Assert.Throws<FileNotFoundException>(() => ModelFingerprint.Compute(dir.Path));
    }
}
