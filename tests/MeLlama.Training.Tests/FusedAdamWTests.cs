using MeLlama.Training.Optim;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Training.Tests;

/// <summary>
/// MasterAdamW's single-pass CPU update (CpuFusedKernels) against AdamW written out in float64 from its
/// definition (torch.optim.AdamW: decoupled decay, bias-corrected moments), with clipping folded in; its
/// gradient norm against a float64 sum; zero-grad-to-none followed by backward.
/// </summary>
public sealed class FusedAdamWTests
{
    const double Lr = 1e-2, Beta1 = 0.9, Beta2 = 0.95, Eps = 1e-8, WeightDecay = 0.1;

    // Sizes cover: the SIMD body plus a scalar tail (37·13), several parallel chunks (300·500 > 64 Ki), a 1-D gain (no decay).
    static readonly long[][] Shapes = [[37, 13], [300, 500], [48]];

    [Theory]
    [InlineData(AdamWKernel.CpuSimd)]
    [InlineData(AdamWKernel.TorchFused)]
    [InlineData(AdamWKernel.TorchOps)]
    public void EveryKernelWithFoldedClippingMatchesAdamWComputedInFloat64(AdamWKernel kernel)
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(11);
        var parameters = Shapes.Select((s, i) => (Name: $"p{i}", Param: new Parameter(randn(s, generator: generator), requires_grad: true))).ToList();
        var reference = parameters.Select(p => new AdamWReference(p.Param.detach().to(ScalarType.Float64).data<double>().ToArray(), p.Param.dim() >= 2)).ToList();
        using var optimizer = new MasterAdamW(parameters.Select(p => (p.Name, p.Param)), Beta1, Beta2, Eps, WeightDecay, kernel);
        Assert.Equal(kernel, optimizer.Kernel);

        for (int step = 1; step <= 5; step++)
        {
            optimizer.ZeroGrad();
            var directions = parameters.Select(p => randn(p.Param.shape, generator: generator)).ToList();
            // loss = Σ p·d, so each gradient is d.
            var loss = parameters.Zip(directions, (p, d) => (p.Param * d).sum()).Aggregate((a, b) => a + b);
            loss.backward();
            double scale = step % 2 == 0 ? 0.25 : 1.0;
            optimizer.Step(Lr, gradScale: scale);
            for (int i = 0; i < parameters.Count; i++)
                reference[i].Step(directions[i].to(ScalarType.Float64).data<double>().ToArray(), scale, step);
        }

        for (int i = 0; i < parameters.Count; i++)
        {
            var actual = parameters[i].Param.detach().data<float>().ToArray();
            var expected = reference[i].Weights;
            double worst = actual.Select((a, j) => Math.Abs(a - expected[j])).Max();
            Assert.True(worst < 2e-5, $"{parameters[i].Name}: {kernel} update differs from float64 AdamW by {worst:E2}");
        }
    }

    /// <summary>
    /// bf16 compute weights with fp32 masters, two micro-batches per step (the first converts into the fp32
    /// accumulator, the second adds in place): the fused kernel and separate ops give the same masters, and both
    /// follow float64 AdamW on the summed gradient. A parameter without a gradient in a step is left alone.
    /// </summary>
    [Theory]
    [InlineData(AdamWKernel.TorchFused)]
    [InlineData(AdamWKernel.TorchOps)]
    public void Bf16WeightsAccumulateMicroBatchesIntoFp32AndFollowFloat64AdamW(AdamWKernel kernel)
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(17);
        var parameters = Shapes.Select((s, i) => (Name: $"p{i}", Param: new Parameter(randn(s, generator: generator).to(ScalarType.BFloat16), requires_grad: true))).ToList();
        var reference = parameters.Select(p => new AdamWReference(p.Param.detach().to(ScalarType.Float64).data<double>().ToArray(), p.Param.dim() >= 2)).ToList();
        using var optimizer = new MasterAdamW(parameters.Select(p => (p.Name, p.Param)), Beta1, Beta2, Eps, WeightDecay, kernel);
        Assert.Equal(kernel, optimizer.Kernel);
        var untouched = parameters[2].Param.detach().clone();
        for (int step = 1; step <= 4; step++)
        {
            optimizer.ZeroGrad();
            // The gain gets no gradient in step 3: it must not move (no decay, no moment update).
            var active = step == 3 ? parameters.Take(2).ToList() : parameters;
            var sums = active.Select(p => zeros(p.Param.shape, ScalarType.Float64)).ToList();
            for (int micro = 0; micro < 2; micro++)
            {
                // bf16-exact directions, so the reference sees exactly the gradient the model does.
                var directions = active.Select(p => randn(p.Param.shape, generator: generator).to(ScalarType.BFloat16)).ToList();
                active.Zip(directions, (p, d) => (p.Param * d).to(ScalarType.Float32).sum()).Aggregate((a, b) => a + b).backward();
                optimizer.AccumulateMicroBatchGradients();
                for (int i = 0; i < active.Count; i++) sums[i].add_(directions[i].to(ScalarType.Float64));
            }
            if (step == 3) untouched = optimizer.MasterWeights().ElementAt(2).Tensor.clone();
            optimizer.Step(Lr, gradScale: 0.5);
            for (int i = 0; i < 2; i++) reference[i].Step(sums[i].data<double>().ToArray(), 0.5, step);
            if (step == 3) Assert.True(optimizer.MasterWeights().ElementAt(2).Tensor.allclose(untouched, 0, 0), "a parameter without a gradient moved");
        }
        var masters = optimizer.MasterWeights().ToList();
        for (int i = 0; i < 2; i++)
        {
            var actual = masters[i].Tensor.data<float>().ToArray();
            double worst = actual.Select((a, j) => Math.Abs(a - reference[i].Weights[j])).Max();
            Assert.True(worst < 2e-5, $"{masters[i].Name}: {kernel} bf16 update differs from float64 AdamW by {worst:E2}");
            Assert.True(parameters[i].Param.to(ScalarType.Float32).allclose(masters[i].Tensor.to(ScalarType.BFloat16).to(ScalarType.Float32)), "compute copy not refreshed");
        }
    }

    [Fact]
    public void GradNormEqualsTheFloat64NormOfAllGradients()
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(5);
        var parameters = Shapes.Select((s, i) => (Name: $"p{i}", Param: new Parameter(randn(s, generator: generator), requires_grad: true))).ToList();
        using var optimizer = new MasterAdamW(parameters.Select(p => (p.Name, p.Param)), Beta1, Beta2, Eps, WeightDecay);
        var directions = parameters.Select(p => randn(p.Param.shape, generator: generator) * 3).ToList();
        parameters.Zip(directions, (p, d) => (p.Param * d).sum()).Aggregate((a, b) => a + b).backward();

        double expected = Math.Sqrt(directions.Sum(d => d.to(ScalarType.Float64).data<double>().ToArray().Sum(x => x * x)));
        Assert.Equal(expected, optimizer.GradNorm(), expected * 1e-12);

        // A non-finite gradient must show in the norm (the step is then skipped).
        using (no_grad()) parameters[1].Param.grad![3, 7] = float.PositiveInfinity;
        Assert.False(double.IsFinite(optimizer.GradNorm()));
    }

    [Fact]
    public void ZeroGradDropsGradientsSoTheNextBackwardStartsFresh()
    {
        using var scope = NewDisposeScope();
        var p = new Parameter(tensor(new float[] { 1, 2, 3 }), requires_grad: true);
        using var optimizer = new MasterAdamW([("p", p)], Beta1, Beta2, Eps, WeightDecay);
        (p * p).sum().backward();
        Assert.Equal(new float[] { 2, 4, 6 }, p.grad!.data<float>().ToArray());
        optimizer.ZeroGrad();
        Assert.Null(p.grad);
        (p * 10).sum().backward();
        Assert.Equal(new float[] { 10, 10, 10 }, p.grad!.data<float>().ToArray());
    }

    /// <summary>torch.optim.AdamW's update, element by element in float64.</summary>
    sealed class AdamWReference(double[] weights, bool decay)
    {
        readonly double[] m = new double[weights.Length], v = new double[weights.Length];
        public double[] Weights { get; } = weights;

        public void Step(double[] grad, double scale, int t)
        {
            double bc1 = 1 - Math.Pow(Beta1, t), bc2 = 1 - Math.Pow(Beta2, t);
            for (int i = 0; i < Weights.Length; i++)
            {
                double g = grad[i] * scale;
                if (decay) Weights[i] *= 1 - Lr * WeightDecay;
                m[i] = Beta1 * m[i] + (1 - Beta1) * g;
                v[i] = Beta2 * v[i] + (1 - Beta2) * g * g;
                Weights[i] -= Lr / bc1 * m[i] / (Math.Sqrt(v[i]) / Math.Sqrt(bc2) + Eps);
            }
        }
    }
}
