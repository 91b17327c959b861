using MeLlama.Inference.Generation;
using MeLlama.Tokenization;

namespace MeLlama.Evaluation.Models;

/// <summary>
/// <see cref="ITextGenerator"/> over the inference component's KV-cache generator (greedy, stop at EOS and at
/// the request's stop strings). The requests of one call (the harness's batch) that share a budget and stop strings
/// run as one left-padded batch (<see cref="TextGenerator.GenerateBatch"/>). A prompt too long for the context keeps
/// BOS and its last tokens, leaving room for the answer. Batching changes the shapes of the matmuls, so in bf16 a
/// near-tie can rarely resolve differently than one prompt at a time; the fingerprint does not include the batch
/// size, so a resumed run may mix predictions made with different --batch-size values.
/// </summary>
public sealed class KvCacheTextGenerator(TextGenerator generator, string fingerprint) : ITextGenerator
{
    public string Fingerprint => $"{fingerprint}+tok:{generator.Tokenizer.Fingerprint}";

    public IReadOnlyList<string> Generate(IReadOnlyList<GenerationRequest> requests)
    {
        var results = new string[requests.Count];
        var groups = Enumerable.Range(0, requests.Count)
            .GroupBy(i => (requests[i].MaxNewTokens, Stops: string.Join("\u0000", requests[i].StopSequences.Where(s => s.Length > 0))));
        foreach (var group in groups)
        {
            var first = requests[group.First()];
            var options = new GenerationOptions { MaxNewTokens = first.MaxNewTokens, Temperature = 0, StopStrings = first.StopSequences.Where(s => s.Length > 0).ToList() };
            var indices = group.ToList();
            var prompts = indices.Select(i => (IReadOnlyList<int>)Fit(generator.Tokenizer, generator.Tokenizer.Encode(requests[i].Prompt, addBos: true),
                generator.ContextLength - Math.Max(1, requests[i].MaxNewTokens))).ToList();
            var generated = generator.GenerateBatch(prompts, options);
            for (int k = 0; k < indices.Count; k++) results[indices[k]] = generated[k].Text;
        }
        return results;
    }

    static int[] Fit(ITextTokenizer tokenizer, int[] tokens, int room)
    {
        if (tokens.Length <= room) return tokens;
        if (room < 2) throw new ArgumentException("No room for a prompt: the answer budget fills the model's context");
        return [tokenizer.BosId, .. tokens[^(room - 1)..]];
    }
}
