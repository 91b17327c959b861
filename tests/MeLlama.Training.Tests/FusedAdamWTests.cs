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

    [Fact]
    public void FusedUpdateWithFoldedClippingMatchesAdamWComputedInFloat64()
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(11);
        var parameters = Shapes.Select((s, i) => (Name: $"p{i}", Param: new Parameter(randn(s, generator: generator), requires_grad: true))).ToList();
        var reference = parameters.Select(p => new AdamWReference(p.Param.detach().to(ScalarType.Float64).data<double>().ToArray(), p.Param.dim() >= 2)).ToList();
        using var optimizer = new MasterAdamW(parameters.Select(p => (p.Name, p.Param)), Beta1, Beta2, Eps, WeightDecay);

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
            Assert.True(worst < 2e-5, $"{parameters[i].Name}: fused update differs from float64 AdamW by {worst:E2}");
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
