using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MeLlama.Model.Tests;

public class KvCacheTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(2)]   // grouped-query (like 70B)
    [InlineData(4)]   // multi-head (like 7B/13B)
    public void Prefill_then_decode_gives_the_full_forward_logits(int kvHeads)
    {
        using var model = new LlamaForCausalLM(Fixtures.TinyConfig(kvHeads), seed: 21);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var tokens = Fixtures.RandomTokens(24, 300, 9);
        var full = model.forward(Fixtures.Ids(tokens))[0];

        using var cache = KvCache.For(model, batchSize: 1, capacity: 32);
        var pieces = new List<Tensor>();
        // Prefill 10, decode 5 single tokens, one chunk of 4 (mask after a non-empty cache), then 5 singles.
        int[] steps = [10, 1, 1, 1, 1, 1, 4, 1, 1, 1, 1, 1];
        int position = 0;
        foreach (int step in steps)
        {
            pieces.Add(model.Forward(Fixtures.Ids(tokens[position..(position + step)]), cache)[0]);
            position += step;
            Assert.Equal(position, cache.Length);
        }
        var incremental = cat(pieces.ToArray(), 0);
        float difference = (full - incremental).abs().max().item<float>();
        output.WriteLine($"kvHeads={kvHeads}: max |full − cached| logit difference {difference:E2}");
        Assert.True(difference < 1e-5, $"max |full − cached| = {difference}");
    }

    [Fact]
    public void Cache_refuses_to_overflow_and_can_be_reset()
    {
        using var model = new LlamaForCausalLM(Fixtures.TinyConfig(), seed: 1);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var cache = KvCache.For(model, batchSize: 1, capacity: 8);
        var first = model.Forward(Fixtures.Ids(1, 2, 3, 4, 5, 6), cache);
        Assert.Throws<InvalidOperationException>(() => model.Forward(Fixtures.Ids(7, 8, 9), cache));
        cache.Reset();
        var again = model.Forward(Fixtures.Ids(1, 2, 3, 4, 5, 6), cache);
        Assert.True(first.allclose(again, rtol: 0, atol: 1e-6));
    }
}
