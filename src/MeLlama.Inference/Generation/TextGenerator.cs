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
/// <see cref="GenerateBatch"/> runs several prompts in lockstep: left-padded into one batch whose <see cref="KvCache"/>
/// masks the padding, each row with its own sampler, stop strings and budget, so each row gets what
/// <see cref="Generate"/> gives it alone (up to float rounding of the batched matmuls).
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
        CheckPrompt(promptIds);

        int budget = Budget(promptIds, options);
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

    void CheckPrompt(IReadOnlyList<int> promptIds)
    {
        if (promptIds.Count == 0) throw new ArgumentException("the prompt has no tokens (a template adds BOS; with raw ids pass at least one)");
        if (promptIds.Count >= ContextLength)
            throw new ArgumentException($"the prompt has {promptIds.Count} tokens; the model's context is {ContextLength} (max_position_embeddings), leaving no room to generate");
        foreach (int id in promptIds)
            if ((uint)id >= (uint)model.Config.VocabSize) throw new ArgumentException($"prompt token id {id} is outside the model's vocabulary (0..{model.Config.VocabSize - 1})");
    }

    int Budget(IReadOnlyList<int> promptIds, GenerationOptions options) => Math.Min(options.MaxNewTokens, ContextLength - promptIds.Count);

    /// <summary>
    /// Generates a continuation of every prompt in one batch (same options for all; see the class summary). Rows that
    /// finish early keep their slot, fed EOS, until the last one is done. When the longest prompt plus the largest
    /// budget would run past the context (left padding shifts every row to the longest prompt's positions), or
    /// without a KV cache, the prompts run one by one instead. Prefill and decode times are the batch's, on every row.
    /// </summary>
    public IReadOnlyList<GenerationResult> GenerateBatch(IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options, CancellationToken cancel = default)
    {
        options.Validate();
        foreach (var p in prompts) CheckPrompt(p);
        if (prompts.Count == 0) return [];
        int longest = prompts.Max(p => p.Count);
        var budgets = prompts.Select(p => Budget(p, options)).ToArray();
        int steps = budgets.Max();
        if (prompts.Count == 1 || !options.UseKvCache || longest + steps > ContextLength || steps == 0)
            return prompts.Select(p => Generate(p, options, cancel: cancel)).ToList();

        int rows = prompts.Count, eos = tokenizer.EosId;
        var samplers = prompts.Select(_ => new TokenSampler(options)).ToArray();
        var decoders = prompts.Select(_ => new StreamingTextDecoder(tokenizer, options.StopStrings)).ToArray();
        var seen = prompts.Select(p => new HashSet<int>(p)).ToArray();
        var generated = prompts.Select(_ => new List<int>()).ToArray();
        var finish = prompts.Select((p, i) => (FinishReason?)null).ToArray();
        var timer = Stopwatch.StartNew();
        double prefillSeconds = 0;

        bool wasTraining = model.training;
        model.eval();
        using var noGrad = no_grad();
        using var cache = KvCache.For(model, rows, longest + steps);
        cache.SetLeftPadding(prompts.Select(p => longest - p.Count).ToArray());
        try
        {
            // Prefill: every prompt right-aligned in a [rows, longest] block (padding id 0, masked out).
            var prefill = new long[rows * longest];
            for (int r = 0; r < rows; r++)
                for (int i = 0; i < prompts[r].Count; i++) prefill[r * longest + longest - prompts[r].Count + i] = prompts[r][i];
            var next = new long[rows];
            var logits = new float[rows][];
            if (!cancel.IsCancellationRequested) NextLogitsBatch(prefill, rows, longest, cache, logits);
            prefillSeconds = timer.Elapsed.TotalSeconds;
            for (int step = 0; step < steps; step++)
            {
                if (cancel.IsCancellationRequested)
                {
                    for (int r = 0; r < rows; r++) finish[r] ??= FinishReason.Cancelled;
                    break;
                }
                for (int r = 0; r < rows; r++)
                {
                    next[r] = eos;
                    if (finish[r] is not null) continue;
                    if (step >= budgets[r]) { finish[r] = budgets[r] < options.MaxNewTokens ? FinishReason.ContextFull : FinishReason.MaxTokens; continue; }
                    int token = samplers[r].Next(logits[r], seen[r]);
                    if (options.StopAtEos && token == eos) { finish[r] = FinishReason.Eos; continue; }
                    seen[r].Add(token);
                    generated[r].Add(token);
                    decoders[r].Push(token);
                    if (decoders[r].Stopped) finish[r] = FinishReason.StopString;
                    next[r] = token;
                }
                if (finish.All(f => f is not null) || step == steps - 1) break;
                NextLogitsBatch(next, rows, 1, cache, logits);
            }
        }
        finally
        {
            if (wasTraining) model.train();
        }
        double total = timer.Elapsed.TotalSeconds;
        return Enumerable.Range(0, rows).Select(r =>
        {
            decoders[r].Flush();
            var reason = finish[r] ?? (budgets[r] < options.MaxNewTokens ? FinishReason.ContextFull : FinishReason.MaxTokens);
            return new GenerationResult(prompts[r].ToArray(), generated[r].ToArray(), decoders[r].Text, reason, prefillSeconds, total - prefillSeconds);
        }).ToList();
    }

    /// <summary>
    /// Feeds <paramref name="ids"/> [rows, length] and writes each row's fp32 logits of its last position into
    /// <paramref name="logits"/> (arrays reused across steps). Only the last position goes through the head: the
    /// prefill's logits for every position would be rows × length × vocab floats (GBs for long prompts).
    /// </summary>
    void NextLogitsBatch(long[] ids, int rows, int length, KvCache cache, float[][] logits)
    {
        using var scope = NewDisposeScope();
        var hidden = model.Model.Forward(tensor(ids, [rows, length], device: model.Device), cache);
        var last = model.Logits(hidden.select(1, length - 1)).to(ScalarType.Float32).cpu().contiguous();
        int vocab = (int)last.shape[1];
        for (int r = 0; r < rows; r++)
        {
            logits[r] ??= new float[vocab];
            last[r].data<float>().CopyTo(logits[r]);
        }
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
        // The head on the last position only (not [T, vocab] for a whole prompt).
        var last = model.Logits(model.Model.Forward(input, cache)[0, -1]).to(ScalarType.Float32).cpu().contiguous();
        var row = new float[last.numel()];
        last.data<float>().CopyTo(row);
        return row;
    }
}
