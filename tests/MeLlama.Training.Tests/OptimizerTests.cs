using MeLlama.Training.Optim;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Training.Tests;

public sealed class OptimizerTests
{
    [Fact]
    public void CosineScheduleWarmsUpLinearlyPeaksAndDecaysToTheFloor()
    {
        var s = CosineSchedule.Create(1e-3, null, 0.1, 0.05, 1000);
        Assert.Equal(50, s.WarmupSteps);
        Assert.Equal(1e-3 / 50, s.LrAt(0), 12);
        Assert.Equal(1e-3, s.LrAt(49), 12);
        Assert.Equal(1e-3, s.LrAt(50), 12);
        Assert.Equal(0.55e-3, s.LrAt(525), 12); // halfway through the decay
        Assert.Equal(1e-4, s.LrAt(1000), 12);
        for (long t = 50; t < 1000; t++) Assert.True(s.LrAt(t + 1) <= s.LrAt(t));
        Assert.Equal(2e-5, CosineSchedule.Create(1e-3, 2e-5, 0.1, 0, 10).LrAt(10), 12);
    }

    static (Parameter W, Parameter G) Params(ScalarType dtype)
    {
        var gen = new Generator(3);
        return (new Parameter(randn([8, 5], generator: gen).to(dtype)), new Parameter(ones(5).to(dtype)));
    }

    static Tensor Loss(Parameter w, Parameter g, int step)
    {
        var x = arange(40, dtype: ScalarType.Float32).reshape(5, 8).sin().mul(step + 1).to(w.dtype);
        return (x.matmul(w) * g).to(ScalarType.Float32).square().mean();
    }

    [Fact]
    public void Fp32UpdatesMatchTorchAdamW()
    {
        var (w1, g1) = Params(ScalarType.Float32);
        var (w2, g2) = Params(ScalarType.Float32);
        using var ours = new MasterAdamW([("w", w1), ("norm", g1)], 0.9, 0.95, 1e-8, 0.1);
        // Torch's AdamW decays every parameter; ours skips 1-D (norm) gains, so the gain gets its own optimizer without decay.
        var torchW = optim.AdamW([w2], lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1);
        var torchG = optim.AdamW([g2], lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0);
        for (int step = 0; step < 5; step++)
        {
            ours.ZeroGrad();
            Loss(w1, g1, step).backward();
            ours.Step(1e-2);
            torchW.zero_grad();
            torchG.zero_grad();
            Loss(w2, g2, step).backward();
            torchW.step();
            torchG.step();
        }
        Assert.True((w1 - w2).abs().max().item<float>() < 1e-6);
        Assert.True((g1 - g2).abs().max().item<float>() < 1e-6);
    }

    [Fact]
    public void Bf16ParametersFollowTheFp32MasterUpdate()
    {
        var (w32, g32) = Params(ScalarType.Float32);
        var (w16, g16) = Params(ScalarType.BFloat16);
        var start32 = w32.detach().clone();
        var start16 = w16.detach().to(ScalarType.Float32);
        using var reference = new MasterAdamW([("w", w32), ("norm", g32)], 0.9, 0.95, 1e-8, 0.0);
        using var mixed = new MasterAdamW([("w", w16), ("norm", g16)], 0.9, 0.95, 1e-8, 0.0);
        for (int step = 0; step < 3; step++)
        {
            foreach (var (opt, w, g) in new[] { (reference, w32, g32), (mixed, w16, g16) })
            {
                opt.ZeroGrad();
                // Two micro-batches: bf16 gradients are summed in fp32.
                for (int micro = 0; micro < 2; micro++)
                {
                    (Loss(w, g, step * 2 + micro) / 2).backward();
                    opt.AccumulateMicroBatchGradients();
                }
                opt.Step(1e-3);
            }
        }
        var master = mixed.MasterWeights().Single(m => m.Name == "w").Tensor;
        Assert.Equal(ScalarType.Float32, master.dtype);
        Assert.True((master.to(ScalarType.BFloat16) - w16).abs().max().to(ScalarType.Float32).item<float>() == 0, "bf16 weights are the rounded master weights");
        // Updates of ~1e-3 are below bf16's resolution near 1: the master copy keeps them, and its total update
        // tracks the fp32 run's (bf16 forward/backward makes the gradients only slightly different).
        var delta32 = w32.detach() - start32;
        var deltaMaster = master - start16;
        double scale = delta32.abs().max().item<float>();
        Assert.True(scale > 1e-3);
        double diff = (deltaMaster - delta32).abs().max().item<float>();
        Assert.True(diff < 0.25 * scale, $"master update differs by {diff} (update scale {scale})");
        Assert.True(double.IsFinite(mixed.GradNorm()));
    }
}
