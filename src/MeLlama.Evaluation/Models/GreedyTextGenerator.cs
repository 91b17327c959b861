using MeLlama.Tokenization;

namespace MeLlama.Evaluation.Models;

/// <summary>
/// Greedy decoding over <see cref="ICausalLanguageModel.GreedyNextTokens"/>: each step re-runs the whole
/// prefix (no KV cache), so it costs O(n²) in the output length. It is the stand-in until the inference
/// component's cached generator is adapted to <see cref="ITextGenerator"/>; fine for tiny models and
/// short answers (choice labels), slow for summaries on large models.
/// Prompts longer than the window keep their last tokens.
/// </summary>
public sealed class GreedyTextGenerator(ITextTokenizer tokenizer, ICausalLanguageModel model, int batchSize = 8) : ITextGenerator
{
    public string Fingerprint => $"{model.Fingerprint}+tok:{tokenizer.Fingerprint}";

    public IReadOnlyList<string> Generate(IReadOnlyList<GenerationRequest> requests)
    {
        var results = new string[requests.Count];
        for (int start = 0; start < requests.Count; start += batchSize)
        {
            var batch = Enumerable.Range(start, Math.Min(batchSize, requests.Count - start)).ToList();
            var prompts = batch.Select(i => tokenizer.Encode(requests[i].Prompt, addBos: true)).ToList();
            var generated = batch.Select(_ => new List<int>()).ToList();
            var done = new bool[batch.Count];
            int maxSteps = batch.Max(i => requests[i].MaxNewTokens);
            for (int step = 0; step < maxSteps && done.Contains(false); step++)
            {
                var active = Enumerable.Range(0, batch.Count).Where(b => !done[b]).ToList();
                var prefixes = active.Select(b => Window([.. prompts[b], .. generated[b]])).ToList();
                var next = model.GreedyNextTokens(prefixes);
                for (int a = 0; a < active.Count; a++)
                {
                    int b = active[a];
                    var request = requests[batch[b]];
                    if (next[a] == tokenizer.EosId) { done[b] = true; continue; }
                    generated[b].Add(next[a]);
                    if (generated[b].Count >= request.MaxNewTokens) done[b] = true;
                    else if (request.StopSequences.Count > 0)
                    {
                        string text = tokenizer.Decode(generated[b].ToArray());
                        if (StopSequences.Cut(text, request.StopSequences).Length < text.Length) done[b] = true;
                    }
                }
            }
            for (int b = 0; b < batch.Count; b++)
                results[batch[b]] = StopSequences.Cut(tokenizer.Decode(generated[b].ToArray()), requests[batch[b]].StopSequences);
        }
        return results;
    }

    int[] Window(int[] tokens) => tokens.Length <= model.MaxSequenceLength ? tokens : tokens[^model.MaxSequenceLength..];
}
