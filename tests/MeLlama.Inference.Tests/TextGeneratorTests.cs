using MeLlama.Inference.ChatTemplates;
using MeLlama.Inference.Generation;
using MeLlama.Model;
using static TorchSharp.torch;

namespace MeLlama.Inference.Tests;

public class TextGeneratorTests
{
    [SkippableFact]
    public void KvCacheGreedyMatchesFullRecomputation()
    {
        var tok = TestModels.LlamaTokenizer();
        using var model = TestModels.TinyLlama();
        var generator = new TextGenerator(model, tok);
        string[] prompts =
        [
            "Question: Is hypertension a risk factor for stroke?\nAnswer:",
            "The patient presented with",
            "肺炎",
        ];
        var options = new GenerationOptions { MaxNewTokens = 24, StopAtEos = false };
        foreach (var prompt in prompts)
        {
            int[] ids = tok.Encode(prompt, addBos: true);
            var cached = generator.Generate(ids, options);
            var recomputed = generator.Generate(ids, options with { UseKvCache = false });
            Assert.Equal(24, cached.GeneratedIds.Length);
            Assert.Equal(recomputed.GeneratedIds, cached.GeneratedIds);
            Assert.Equal(recomputed.Text, cached.Text);
            Assert.Equal(FinishReason.MaxTokens, cached.Finish);
        }
    }

    [SkippableFact]
    public void CachedStepLogitsMatchFullForwardLogits()
    {
        using var model = TestModels.TinyLlama();
        int[] tokens = [1, 450, 16500, 338, 263, 2924, 29892, 541, 278, 11460, 338];
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var full = model.forward(tensor(tokens.Select(t => (long)t).ToArray(), [1, tokens.Length]));
        using var cache = KvCache.For(model, 1, tokens.Length);
        var prefill = model.Forward(tensor(tokens[..5].Select(t => (long)t).ToArray(), [1, 5]), cache);
        Assert.True(allclose(full[0, ..5], prefill[0], rtol: 1e-4, atol: 1e-4));
        for (int i = 5; i < tokens.Length; i++)
        {
            var step = model.Forward(tensor(new long[] { tokens[i] }, [1, 1]), cache);
            Assert.True(allclose(full[0, i], step[0, 0], rtol: 1e-4, atol: 1e-4), $"position {i}");
        }
    }

    [SkippableFact]
    public void SamplingIsReproducibleWithASeedAndStreamsTheSameText()
    {
        var tok = TestModels.LlamaTokenizer();
        using var model = TestModels.TinyLlama();
        var generator = new TextGenerator(model, tok);
        int[] prompt = ChatEncoder.EncodePrompt(ChatTemplateRegistry.MeLlamaTemplate, tok, [ChatMessage.User("What causes anemia?")]);
        var options = new GenerationOptions { MaxNewTokens = 20, Temperature = 0.9, TopK = 50, TopP = 0.95, RepetitionPenalty = 1.1, Seed = 42, StopAtEos = false };
        var streamed = new System.Text.StringBuilder();
        var a = generator.Generate(prompt, options, s => streamed.Append(s));
        var b = generator.Generate(prompt, options);
        var c = generator.Generate(prompt, options with { Seed = 43 });
        Assert.Equal(a.GeneratedIds, b.GeneratedIds);
        Assert.NotEqual(a.GeneratedIds, c.GeneratedIds);
        Assert.Equal(a.Text, streamed.ToString());
        Assert.Equal(tok.Decode(a.GeneratedIds), a.Text);
    }

    [SkippableFact]
    public void ContextLimitCapsGenerationAndOverlongPromptsAreRefused()
    {
        var tok = TestModels.LlamaTokenizer();
        using var model = TestModels.TinyLlama();
        var generator = new TextGenerator(model, tok);
        int context = generator.ContextLength;
        var prompt = Enumerable.Repeat(450, context - 3).Prepend(1).ToArray();
        var result = generator.Generate(prompt, new GenerationOptions { MaxNewTokens = 10, StopAtEos = false });
        Assert.Equal(2, result.GeneratedIds.Length);
        Assert.Equal(FinishReason.ContextFull, result.Finish);
        var tooLong = Enumerable.Repeat(450, context).ToArray();
        var e = Assert.Throws<ArgumentException>(() => generator.Generate(tooLong, new GenerationOptions()));
        Assert.Contains("context", e.Message);
    }
}
