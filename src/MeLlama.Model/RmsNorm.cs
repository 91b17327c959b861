using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>
/// Root-mean-square layer norm: x / sqrt(mean(x²) + eps) · weight. Like HF, the statistics are taken in
/// fp32 whatever the model's dtype, and the normalised activations are cast back before the weight multiplies
/// them (so bf16 models match HF bit for bit in this step).
/// </summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    Parameter weight;
    readonly double eps;

    public RmsNorm(long hiddenSize, double eps, ParameterFactory factory) : base("RmsNorm")
    {
        weight = factory.Ones(hiddenSize);
        this.eps = eps;
        RegisterComponents();
    }

    public Parameter Weight => weight;

    /// <summary>Replaces the weight parameter (see <see cref="LlamaForCausalLM.ReplaceParameters"/>).</summary>
    internal void ReplaceWeight(Parameter replacement)
    {
        if (ReferenceEquals(replacement, weight)) return;
        var old = weight;
        weight = replacement;
        ConditionallyRegisterParameter(nameof(weight), replacement);
        old.Dispose(); // as TorchSharp's Linear.weight setter does
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var x32 = x.to(ScalarType.Float32);
        var variance = x32.pow(2).mean([-1], keepdim: true);
        var normalised = (x32 * (variance + eps).rsqrt()).to(x.dtype);
        return (weight * normalised).MoveToOuterDisposeScope();
    }
}
