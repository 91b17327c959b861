using System.Diagnostics;
using MeLlama.Model;
using MeLlama.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Inference.Generation;

public enum FinishReason { Eos, StopString, MaxTokens, ContextFull, Cancelled }

/// <summary>What one generation produced.</summary>
/// <param name="GeneratedIds">New tokens (the EOS that stopped generation is not included).</param>
/// <param name="Text">Decoded new text, cut before a stop string.</param>
/// <param name="PrefillSeconds">Time to process the prompt (to the first new token's logits).</param>
/// <param name="DecodeSeconds">Time of the remaining steps.</param>
public sealed record GenerationResult(int[] PromptIds, int[] GeneratedIds, string Text, FinishReason Finish, double PrefillSeconds, double DecodeSeconds)
{
    /// <summary>Generated tokens per second over the whole call (prefill included).</summary>
    public double TokensPerSecond => GeneratedIds.Length / Math.Max(PrefillSeconds + DecodeSeconds, 1e-9);
}

/// <summary>
/// Autoregressive generation with one <see cref="LlamaForCausalLM"/>: the prompt runs once through the model filling a
/// <see cref="KvCache"/>, then each step feeds only the newest token. With <see cref="GenerationOptions.UseKvCache"/>
/// off, every step recomputes the whole sequence (the reference the cache is tested against, and a benchmark baseline).
/// One sequence at a time (the model has no padding mask, so batches of different lengths are not batched).
/// </summary>
public sealed class TextGenerator(LlamaForCausalLM model, ITextTokenizer tokenizer)
{
    public LlamaForCausalLM Model => model;
    public ITextTokenizer Tokenizer => tokenizer;

    /// <summary>Tokens the model can hold (prompt + generated).</summary>
    public int ContextLength => model.Config.MaxPositionEmbeddings;

    /// <summary>
    /// Generates a continuation of <paramref name="promptIds"/>. <paramref name="onText"/> receives the text as it becomes
    /// printable (whole characters, stop strings withheld).
    /// </summary>
    public GenerationResult Generate(IReadOnlyList<int> promptIds, GenerationOptions options, Action<string>? onText = null, CancellationToken cancel = default)
    {
        options.Validate();
        if (promptIds.Count == 0) throw new ArgumentException("the prompt has no tokens (a template adds BOS; with raw ids pass at least one)");
        if (promptIds.Count >= ContextLength)
            throw new ArgumentException($"the prompt has {promptIds.Count} tokens; the model's context is {ContextLength} (max_position_embeddings), leaving no room to generate");
        foreach (int id in promptIds)
            if ((uint)id >= (uint)model.Config.VocabSize) throw new ArgumentException($"prompt token id {id} is outside the model's vocabulary (0..{model.Config.VocabSize - 1})");

        int budget = Math.Min(options.MaxNewTokens, ContextLength - promptIds.Count);
        var sampler = new TokenSampler(options);
        var decoder = new StreamingTextDecoder(tokenizer, options.StopStrings);
        var sequence = new List<int>(promptIds);
        var seen = new HashSet<int>(promptIds);
        var generated = new List<int>();
        var finish = budget < options.MaxNewTokens ? FinishReason.ContextFull : FinishReason.MaxTokens;
        int eos = tokenizer.EosId;
        var timer = Stopwatch.StartNew();
        double prefillSeconds = 0;

        bool wasTraining = model.training;
        model.eval();
        using var noGrad = no_grad();
        using var cache = options.UseKvCache && budget > 0 ? KvCache.For(model, 1, promptIds.Count + budget) : null;
        try
        {
            for (int step = 0; step < budget; step++)
            {
                if (cancel.IsCancellationRequested) { finish = FinishReason.Cancelled; break; }
                float[] logits = NextLogits(sequence, cache, step == 0);
                if (step == 0) prefillSeconds = timer.Elapsed.TotalSeconds;
                int next = sampler.Next(logits, seen);
                if (options.StopAtEos && next == eos) { finish = FinishReason.Eos; break; }
                sequence.Add(next);
                seen.Add(next);
                generated.Add(next);
                string piece = decoder.Push(next);
                if (piece.Length > 0) onText?.Invoke(piece);
                if (decoder.Stopped) { finish = FinishReason.StopString; break; }
            }
            string rest = decoder.Flush();
            if (rest.Length > 0) onText?.Invoke(rest);
        }
        finally
        {
            if (wasTraining) model.train();
        }
        double total = timer.Elapsed.TotalSeconds;
        return new GenerationResult(promptIds.ToArray(), generated.ToArray(), decoder.Text, finish, prefillSeconds, total - prefillSeconds);
    }

    /// <summary>fp32 logits of the position after the last token of <paramref name="sequence"/>.</summary>
    float[] NextLogits(List<int> sequence, KvCache? cache, bool first)
    {
        using var scope = NewDisposeScope();
        // With a cache only the tokens it has not seen go in: the whole prompt first, then one token per step.
        int from = cache is null ? 0 : (int)cache.Length;
        if (!first && cache is not null && from != sequence.Count - 1) throw new InvalidOperationException("KV cache out of step with the sequence");
        var ids = new long[sequence.Count - from];
        for (int i = 0; i < ids.Length; i++) ids[i] = sequence[from + i];
        var input = tensor(ids, [1, ids.Length], device: model.Device);
        var logits = model.Forward(input, cache);
        var last = logits[0, -1].to(ScalarType.Float32).cpu().contiguous();
        var row = new float[last.numel()];
        last.data<float>().CopyTo(row);
        return row;
    }
}
