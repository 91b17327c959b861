using MeLlama.Inference.Generation;
using MeLlama.Tokenization;

namespace MeLlama.Evaluation.Models;

/// <summary>
/// <see cref="ITextGenerator"/> over the inference component's KV-cache generator (greedy, stop at EOS and at
/// the request's stop strings). One prompt at a time, as that generator does. A prompt too long for the
/// context keeps BOS and its last tokens, leaving room for the answer.
/// </summary>
public sealed class KvCacheTextGenerator(TextGenerator generator, string fingerprint) : ITextGenerator
{
    public string Fingerprint => $"{fingerprint}+tok:{generator.Tokenizer.Fingerprint}";

    public IReadOnlyList<string> Generate(IReadOnlyList<GenerationRequest> requests)
    {
        var results = new string[requests.Count];
        for (int i = 0; i < requests.Count; i++)
        {
            var r = requests[i];
            int[] prompt = Fit(generator.Tokenizer, generator.Tokenizer.Encode(r.Prompt, addBos: true), generator.ContextLength - Math.Max(1, r.MaxNewTokens));
            var options = new GenerationOptions { MaxNewTokens = r.MaxNewTokens, Temperature = 0, StopStrings = r.StopSequences.Where(s => s.Length > 0).ToList() };
            results[i] = generator.Generate(prompt, options).Text;
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
