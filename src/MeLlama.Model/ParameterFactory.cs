using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>
/// Where and how a model's parameters are created. Parameters start as uninitialised storage
/// (<c>torch.empty</c>): a checkpoint loader fills them directly, so a 13B model is never built twice
/// (random init, then weights); <see cref="LlamaForCausalLM.InitializeWeights"/> fills a fresh model.
/// The <c>meta</c> device gives a model with shapes but no memory (for sharded engines).
/// </summary>
public sealed record ParameterFactory(Device Device, ScalarType Dtype)
{
    public static ParameterFactory Cpu(ScalarType dtype = ScalarType.Float32) => new(CPU, dtype);

    public Parameter Empty(params long[] shape) => new(empty(shape, Dtype, Device), requires_grad: true);

    public Parameter Ones(params long[] shape) => new(ones(shape, Dtype, Device), requires_grad: true);

    /// <summary>A linear map without bias (LLaMA has none) whose weight is [outFeatures, inFeatures], as in HF.</summary>
    public Linear Linear(long inFeatures, long outFeatures) => nn.Linear(Empty(outFeatures, inFeatures));
}
