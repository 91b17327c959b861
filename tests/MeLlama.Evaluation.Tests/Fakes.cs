using MeLlama.Evaluation.Models;

namespace MeLlama.Evaluation.Tests;

/// <summary>A "model" that answers each prompt with a fixed function of it, counting calls.</summary>
internal sealed class FakeGenerator(Func<string, string> answer, string fingerprint = "fake-generator") : ITextGenerator
{
    public int Calls { get; private set; }
    public int Prompts { get; private set; }
    /// <summary>Throw after this many calls (simulates a crash mid-run).</summary>
    public int? FailAfterCalls { get; set; }
    public List<GenerationRequest> Seen { get; } = [];
    public string Fingerprint => fingerprint;

    public IReadOnlyList<string> Generate(IReadOnlyList<GenerationRequest> requests)
    {
        if (FailAfterCalls is int n && Calls >= n) throw new IOException("simulated crash");
        Calls++;
        Prompts += requests.Count;
        Seen.AddRange(requests);
        return requests.Select(r => answer(r.Prompt)).ToList();
    }
}

/// <summary>A scorer whose log-likelihood is a fixed function of (context, continuation).</summary>
internal sealed class FakeScorer(Func<string, string, double> score, string fingerprint = "fake-scorer") : ILogLikelihoodScorer
{
    public int Requests { get; private set; }
    public string Fingerprint => fingerprint;

    public IReadOnlyList<LogLikelihood> Score(IReadOnlyList<LogLikelihoodRequest> requests)
    {
        Requests += requests.Count;
        return requests.Select(r => new LogLikelihood(score(r.Context, r.Continuation), 1)).ToList();
    }
}
