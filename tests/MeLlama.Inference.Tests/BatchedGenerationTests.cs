using MeLlama.Inference.Generation;
using MeLlama.Model;
using MeLlama.Tokenization;
using static TorchSharp.torch;

namespace MeLlama.Inference.Tests;

/// <summary>
/// <see cref="TextGenerator.GenerateBatch"/> (left padding masked by the KV cache) against <see cref="TextGenerator.Generate"/>
/// one prompt at a time: the same tokens, text and finish reason for every row, greedy and sampled, with EOS, stop
/// strings and the context limit; and the padded prefill's logits against each prompt run alone.
/// </summary>
public class BatchedGenerationTests
{
    static readonly string[] Prompts =
    [
        "Question: Is hypertension a risk factor for stroke? Answer:",
        "The patient",
        "A 54-year-old man presents with chest pain radiating to the left arm for two hours. The most likely diagnosis is",
        "Metformin",
    ];

    static (LlamaForCausalLM Model, ITextTokenizer Tokenizer) DemoModel(int context = 256)
    {
        var tokenizer = TokenizerLoader.Load("gpt2");
        var config = LlamaConfig.Demo with { VocabSize = tokenizer.VocabSize, MaxPositionEmbeddings = context, BosTokenId = tokenizer.BosId, EosTokenId = tokenizer.EosId };
        return (new LlamaForCausalLM(config, seed: 3), tokenizer);
    }

    static void AssertSameAsOneByOne(TextGenerator generator, IReadOnlyList<int[]> prompts, GenerationOptions options)
    {
        var batched = generator.GenerateBatch(prompts, options);
        Assert.Equal(prompts.Count, batched.Count);
        for (int i = 0; i < prompts.Count; i++)
        {
            var alone = generator.Generate(prompts[i], options);
            Assert.Equal(alone.GeneratedIds, batched[i].GeneratedIds);
            Assert.Equal(alone.Text, batched[i].Text);
            Assert.Equal(alone.Finish, batched[i].Finish);
            Assert.Equal(prompts[i], batched[i].PromptIds);
        }
    }

    [Fact]
    public void GreedyAndSampledBatchesGiveEachRowWhatItGetsAlone()
    {
        var (model, tokenizer) = DemoModel();
        using var _ = model;
        var generator = new TextGenerator(model, tokenizer);
        var prompts = Prompts.Select(p => tokenizer.Encode(p, addBos: true)).ToList();
        Assert.True(prompts.Select(p => p.Length).Distinct().Count() == prompts.Count, "prompts of different lengths exercise the padding");
        AssertSameAsOneByOne(generator, prompts, new GenerationOptions { MaxNewTokens = 20, StopAtEos = false });
        // Sampling over this random model's nearly flat distribution would turn float-rounding differences of the
        // batched matmuls into different draws (the CDF's steps are ~2e-5 apart); top-k keeps the draw robust, as a
        // trained model's peaked distribution does.
        AssertSameAsOneByOne(generator, prompts, new GenerationOptions { MaxNewTokens = 20, Temperature = 0.9, TopK = 5, RepetitionPenalty = 1.2, Seed = 11 });
    }

    [Fact]
    public void RowsStopOnTheirOwnAtStopStringsAndEos()
    {
        var (model, tokenizer) = DemoModel();
        using var _ = model;
        var generator = new TextGenerator(model, tokenizer);
        var prompts = Prompts.Select(p => tokenizer.Encode(p, addBos: true)).ToList();
        var free = prompts.Select(p => generator.Generate(p, new GenerationOptions { MaxNewTokens = 24, StopAtEos = false })).ToList();
        // A stop string from the middle of row 0's free continuation: row 0 stops early, the others go on (or stop
        // wherever they happen to produce it), each as when generated alone.
        string stop = free[0].Text.Substring(free[0].Text.Length / 2, Math.Min(3, free[0].Text.Length - free[0].Text.Length / 2));
        Assert.False(string.IsNullOrEmpty(stop));
        var options = new GenerationOptions { MaxNewTokens = 24, StopStrings = [stop] };
        AssertSameAsOneByOne(generator, prompts, options);
        Assert.Equal(FinishReason.StopString, generator.GenerateBatch(prompts, options)[0].Finish);
        // Budgets of one and zero tokens.
        AssertSameAsOneByOne(generator, prompts, new GenerationOptions { MaxNewTokens = 1 });
        AssertSameAsOneByOne(generator, prompts, new GenerationOptions { MaxNewTokens = 0 });
    }

    [Fact]
    public void ARowThatEmitsEosStopsWhileTheOthersGoOn()
    {
        var (model, tokenizer) = DemoModel();
        using var _ = model;
        var prompts = Prompts.Select(p => tokenizer.Encode(p, addBos: true)).ToList();
        var free = new TextGenerator(model, tokenizer).Generate(prompts[2], new GenerationOptions { MaxNewTokens = 8, StopAtEos = false });
        // Declare a later token of row 2's free continuation (its first one not seen before) to be EOS: row 2 then
        // stops just before it, whatever the others do.
        int stopAt = Enumerable.Range(1, free.GeneratedIds.Length - 1).First(k => !free.GeneratedIds[..k].Contains(free.GeneratedIds[k]));
        var generator = new TextGenerator(model, new EosAs(tokenizer, free.GeneratedIds[stopAt]));
        var options = new GenerationOptions { MaxNewTokens = 12 };
        AssertSameAsOneByOne(generator, prompts, options);
        var batched = generator.GenerateBatch(prompts, options);
        Assert.Equal(FinishReason.Eos, batched[2].Finish);
        Assert.Equal(free.GeneratedIds[..stopAt], batched[2].GeneratedIds);
    }

    sealed class EosAs(ITextTokenizer inner, int eos) : ITextTokenizer
    {
        public string Name => inner.Name;
        public int VocabSize => inner.VocabSize;
        public int BosId => inner.BosId;
        public int EosId => eos;
        public string Fingerprint => inner.Fingerprint;
        public int[] Encode(string text, bool addBos = false, bool addEos = false) => inner.Encode(text, addBos, addEos);
        public string Decode(ReadOnlySpan<int> ids) => inner.Decode(ids);
        public void SaveHfFiles(string directory, string? chatTemplate = null) => inner.SaveHfFiles(directory, chatTemplate);
    }

    [Fact]
    public void NearTheContextLimitRowsStillGetWhatTheyGetAlone()
    {
        var (model, tokenizer) = DemoModel(context: 48);
        using var _ = model;
        var generator = new TextGenerator(model, tokenizer);
        var prompts = new List<int[]> { tokenizer.Encode(Prompts[1], addBos: true), tokenizer.Encode(Prompts[2], addBos: true) };
        // The long prompt leaves less room than asked for: it ends with ContextFull (the batch runs row by row then).
        var options = new GenerationOptions { MaxNewTokens = 40, StopAtEos = false };
        AssertSameAsOneByOne(generator, prompts, options);
        Assert.Equal(FinishReason.ContextFull, generator.GenerateBatch(prompts, options)[1].Finish);
    }

    [Fact]
    public void TheBatchedPathRunsRightUpToTheContextLimit()
    {
        var (model, tokenizer) = DemoModel(context: 64);
        using var _ = model;
        var generator = new TextGenerator(model, tokenizer);
        var prompts = new List<int[]> { tokenizer.Encode(Prompts[1], addBos: true), tokenizer.Encode(Prompts[0], addBos: true) };
        int longest = prompts.Max(p => p.Length);
        // longest + budget == context exactly: every row gets the full budget, the batch is not split.
        var options = new GenerationOptions { MaxNewTokens = 64 - longest, StopAtEos = false };
        AssertSameAsOneByOne(generator, prompts, options);
        var batched = generator.GenerateBatch(prompts, options);
        Assert.All(batched, r => Assert.Equal(64 - longest, r.GeneratedIds.Length));
        Assert.Equal(batched[0].PrefillSeconds, batched[1].PrefillSeconds); // one batch: shared timings
    }

    [Fact]
    public void PaddingIsSetBeforeThePrefillAndClearedByReset()
    {
        var (model, _) = DemoModel();
        using var __ = model;
        using var scope = NewDisposeScope();
        using var cache = KvCache.For(model, 2, 16);
        cache.SetLeftPadding([0, 0]);
        Assert.Null(cache.AttentionMask(0, 4, CPU));              // no row padded: the plain causal path
        cache.SetLeftPadding([2, 0]);
        var mask = cache.AttentionMask(0, 4, CPU)!;
        Assert.Equal(new long[] { 2, 1, 4, 4 }, mask.shape);
        Assert.False(mask[0, 0, 3, 1].item<bool>());              // a real token never sees padding
        Assert.True(mask[0, 0, 1, 1].item<bool>());               // a padding query sees itself
        Assert.False(mask[1, 0, 1, 2].item<bool>());              // causal
        using (no_grad()) model.Forward(zeros([2, 4], ScalarType.Int64), cache);
        Assert.Throws<InvalidOperationException>(() => cache.SetLeftPadding([1, 0]));
        cache.Reset();
        Assert.Null(cache.AttentionMask(0, 4, CPU));
    }

    [Fact]
    public void PaddedPrefillLogitsEqualEachPromptAlone()
    {
        var (model, tokenizer) = DemoModel();
        using var _ = model;
        model.eval();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var prompts = Prompts.Select(p => tokenizer.Encode(p, addBos: true)).ToList();
        int longest = prompts.Max(p => p.Length);
        var ids = zeros([prompts.Count, longest], ScalarType.Int64);
        for (int r = 0; r < prompts.Count; r++)
            ids[r, TensorIndex.Slice(longest - prompts[r].Length)] = tensor(prompts[r].Select(t => (long)t).ToArray());
        using var cache = KvCache.For(model, prompts.Count, longest + 1);
        cache.SetLeftPadding(prompts.Select(p => longest - p.Length).ToArray());
        var padded = model.Forward(ids, cache);
        double worst = 0;
        for (int r = 0; r < prompts.Count; r++)
        {
            var alone = model.forward(tensor(prompts[r].Select(t => (long)t).ToArray(), [1, prompts[r].Length]))[0];
            var rows = padded[r].narrow(0, longest - prompts[r].Length, prompts[r].Length);
            worst = Math.Max(worst, (rows - alone).abs().max().item<float>() / alone.abs().max().item<float>());
            Assert.False(padded[r].isnan().any().item<bool>(), "padding positions must not produce NaN");
        }
        Assert.True(worst < 1e-5, $"padded logits differ from unpadded by {worst:E2} (relative)");
    }
}
