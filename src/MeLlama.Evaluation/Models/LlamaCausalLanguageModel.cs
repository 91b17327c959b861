using MeLlama.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Evaluation.Models;

/// <summary>
/// <see cref="ICausalLanguageModel"/> over the TorchSharp LLaMA. Sequences of a call are run as right-padded
/// batches of at most <paramref name="maxBatchTokens"/> padded tokens (causal attention means padding after a
/// sequence cannot change its positions); the vocabulary projection and fp32 log-softmax are applied only
/// at the positions whose next token is scored, so memory stays O(targets × vocab) rather than O(B·T·vocab).
/// </summary>
public sealed class LlamaCausalLanguageModel(LlamaForCausalLM model, string fingerprint, int maxBatchTokens = 8192) : ICausalLanguageModel
{
    public string Fingerprint { get; } = fingerprint;
    public int MaxSequenceLength => model.Config.MaxPositionEmbeddings;

    public IReadOnlyList<float[]> TokenLogProbs(IReadOnlyList<ScoringSpan> spans)
    {
        foreach (var s in spans)
            if (s.FirstTarget < 1 || s.FirstTarget > s.Tokens.Length) throw new ArgumentException($"FirstTarget {s.FirstTarget} outside 1..{s.Tokens.Length}");
        var results = new float[spans.Count][];
        foreach (var batch in Batches(spans.Select(s => s.Tokens.Length).ToList()))
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            // The last token is never an input whose successor is scored, so it need not be fed.
            var hidden = Hidden(batch.Select(i => spans[i].Tokens[..^1]).ToList());
            for (int b = 0; b < batch.Count; b++)
            {
                var span = spans[batch[b]];
                if (span.TargetCount == 0) { results[batch[b]] = []; continue; }
                // Position p predicts token p+1: targets FirstTarget.. are predicted at FirstTarget-1..Length-2.
                var h = hidden[b].narrow(0, span.FirstTarget - 1, span.TargetCount);
                var logProbs = model.Logits(h).to(ScalarType.Float32).log_softmax(-1);
                var targets = tensor(span.Tokens[span.FirstTarget..].Select(t => (long)t).ToArray(), ScalarType.Int64, model.Device).unsqueeze(1);
                results[batch[b]] = logProbs.gather(1, targets).squeeze(1).cpu().data<float>().ToArray();
            }
        }
        return results;
    }

    public IReadOnlyList<int> GreedyNextTokens(IReadOnlyList<int[]> prefixes)
    {
        var results = new int[prefixes.Count];
        foreach (var batch in Batches(prefixes.Select(p => p.Length).ToList()))
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var hidden = Hidden(batch.Select(i => prefixes[i]).ToList());
            for (int b = 0; b < batch.Count; b++)
            {
                var last = hidden[b].narrow(0, prefixes[batch[b]].Length - 1, 1);
                results[batch[b]] = (int)model.Logits(last).argmax(-1).cpu().item<long>();
            }
        }
        return results;
    }

    /// <summary>Final normalised hidden states [B, Tmax, D] of right-padded sequences (pad id 0).</summary>
    Tensor Hidden(IReadOnlyList<int[]> sequences)
    {
        int maxLength = Math.Max(1, sequences.Max(s => s.Length));
        if (maxLength > MaxSequenceLength) throw new ArgumentException($"Sequence of {maxLength} tokens exceeds the model's {MaxSequenceLength} positions");
        var ids = new long[sequences.Count * maxLength];
        for (int b = 0; b < sequences.Count; b++)
            for (int t = 0; t < sequences[b].Length; t++)
            {
                int id = sequences[b][t];
                if (id < 0 || id >= model.Config.VocabSize) throw new ArgumentException($"Token id {id} is outside the vocabulary [0, {model.Config.VocabSize})");
                ids[b * maxLength + t] = id;
            }
        var input = tensor(ids, [sequences.Count, maxLength], ScalarType.Int64, model.Device);
        return model.Model.Forward(input, null);
    }

    /// <summary>Groups indices (longest first) so that count × longest length stays within the token budget.</summary>
    List<List<int>> Batches(IReadOnlyList<int> lengths)
    {
        var order = Enumerable.Range(0, lengths.Count).OrderByDescending(i => lengths[i]).ToList();
        var batches = new List<List<int>>();
        var current = new List<int>();
        int currentMax = 0;
        foreach (int i in order)
        {
            int newMax = Math.Max(currentMax, Math.Max(1, lengths[i]));
            if (current.Count > 0 && newMax * (current.Count + 1) > maxBatchTokens)
            {
                batches.Add(current);
                current = [];
                newMax = Math.Max(1, lengths[i]);
            }
            current.Add(i);
            currentMax = newMax;
        }
        if (current.Count > 0) batches.Add(current);
        return batches;
    }
}
