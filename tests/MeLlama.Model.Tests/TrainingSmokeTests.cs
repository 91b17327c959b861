using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Model.Tests;

/// <summary>The model is trainable: every parameter gets a gradient and a few optimizer steps fit a batch.</summary>
public class TrainingSmokeTests(Xunit.Abstractions.ITestOutputHelper output)
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Gradients_reach_every_parameter_and_a_few_steps_lower_the_loss(bool tied)
    {
        using var model = new LlamaForCausalLM(Fixtures.TinyConfig(tied: tied), seed: 17);
        using var optimizer = optim.AdamW(model.parameters(), lr: 1e-2);
        var tokens = Fixtures.RandomTokens(33, 300, 12);
        using var batch = Fixtures.Ids(tokens);
        using var inputs = batch.narrow(1, 0, 32);
        using var targets = batch.narrow(1, 1, 32).reshape(-1);

        float Step()
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            var logits = model.forward(inputs);
            var loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), targets);
            loss.backward();
            optimizer.step();
            return loss.item<float>();
        }

        var watch = System.Diagnostics.Stopwatch.StartNew();
        float first = Step();
        output.WriteLine($"first step {watch.ElapsedMilliseconds} ms");
        foreach (var (name, parameter) in model.named_parameters())
        {
            Assert.NotNull(parameter.grad);
            Assert.True(parameter.grad!.abs().sum().item<float>() > 0, $"{name} got no gradient");
        }
        float last = first;
        watch.Restart();
        for (int i = 0; i < 10; i++) last = Step();
        output.WriteLine($"10 steps {watch.ElapsedMilliseconds} ms");
        Assert.InRange(first, Math.Log(300) - 0.5, Math.Log(300) + 0.5);   // random init ≈ uniform prediction
        Assert.True(last < first * 0.5, $"loss {first} → {last}");
    }
}
