using MeLlama.TestSupport;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MeLlama.Model.Tests;

/// <summary>
/// The model reproduces an independent float64 implementation of HF's LlamaForCausalLM on the two
/// fixture checkpoints (F32 single file; BF16 split in two files with an index, upcast to fp32 here).
/// </summary>
public class FixtureParityTests(ITestOutputHelper output)
{
    const double LogProbTolerance = 1e-3;     // absolute, per token
    const double LogitTolerance = 1e-4;       // relative to the largest |logit|

    [SkippableFact]
    public void Fp32_single_file_fixture_matches_reference_logprobs_and_logits() => CheckFixture(SharedData.TinyLlama);

    [SkippableFact]
    public void Bf16_sharded_fixture_upcast_to_fp32_matches_reference_logprobs_and_logits() => CheckFixture(SharedData.TinyLlamaBf16Sharded);

    void CheckFixture(string fixture)
    {
        string dir = SharedData.Require(fixture);
        using var model = HfCheckpoint.LoadModel(dir, CPU, ScalarType.Float32);
        model.eval();
        var reference = Fixtures.ReadReference(dir);
        Assert.True(reference.Count >= 2);

        double worstLogProb = 0;
        foreach (var sequence in reference)
        {
            var logProbs = Scoring.NextTokenLogProbs(model, sequence.Tokens);
            Assert.Equal(sequence.LogProbs.Length, logProbs.Length);
            for (int i = 0; i < logProbs.Length; i++)
            {
                double error = Math.Abs(logProbs[i] - sequence.LogProbs[i]);
                worstLogProb = Math.Max(worstLogProb, error);
                Assert.True(error < LogProbTolerance, $"sequence {sequence.Id} token {i}: {logProbs[i]} vs reference {sequence.LogProbs[i]}");
            }
        }

        double worstLogit = 0;
        for (int s = 0; s < 2; s++)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var expected = Fixtures.ReadReferenceLogits(dir, s);
            long positions = expected.shape[0];
            var logits = model.forward(Fixtures.Ids(reference[s].Tokens))[0].narrow(0, 0, positions);
            Assert.Equal(expected.shape, logits.shape);
            double relative = (logits - expected).abs().max().item<float>() / expected.abs().max().item<float>();
            worstLogit = Math.Max(worstLogit, relative);
            Assert.True(relative < LogitTolerance, $"sequence {s}: max |logit error| / max |logit| = {relative:E2}");
        }
        output.WriteLine($"{fixture}: max |logprob error| {worstLogProb:E2} over {reference.Sum(r => r.LogProbs.Length)} tokens; max relative logit error {worstLogit:E2}");
    }

    [SkippableFact]
    public void Bf16_model_runs_on_the_fixture_and_stays_close_to_reference()
    {
        string dir = SharedData.Require(SharedData.TinyLlamaBf16Sharded);
        using var model = HfCheckpoint.LoadModel(dir, CPU, ScalarType.BFloat16);
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.BFloat16, p.dtype));
        var sequence = Fixtures.ReadReference(dir)[0];
        using (var scope = NewDisposeScope())
        using (no_grad())
            Assert.Equal(ScalarType.BFloat16, model.forward(Fixtures.Ids(sequence.Tokens)).dtype);

        var logProbs = Scoring.NextTokenLogProbs(model, sequence.Tokens);
        double meanError = logProbs.Select((lp, i) => Math.Abs(lp - sequence.LogProbs[i])).Average();
        output.WriteLine($"bf16 forward: mean |logprob error| {meanError:E2}");
        // bf16 activations carry ~3 significant digits; a wrong model is off by whole nats.
        Assert.True(meanError < 0.1, $"bf16 mean |logprob error| {meanError}");
    }
}
