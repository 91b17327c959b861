using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>
/// One pre-norm transformer block: h = x + Attention(RmsNorm(x)); out = h + Mlp(RmsNorm(h)).
/// Callable on its own (hidden [B, T, D] + rotary tables → hidden), which is what activation
/// checkpointing and a unit-by-unit sharded engine need.
/// </summary>
public sealed class LlamaDecoderLayer : nn.Module<Tensor, RotaryTables, Tensor>
{
    readonly LlamaAttention self_attn;
    readonly LlamaMlp mlp;
    readonly RmsNorm input_layernorm, post_attention_layernorm;

    public LlamaDecoderLayer(LlamaConfig config, int layerIndex, ParameterFactory factory) : base($"layer{layerIndex}")
    {
        LayerIndex = layerIndex;
        self_attn = new LlamaAttention(config, layerIndex, factory);
        mlp = new LlamaMlp(config, factory);
        input_layernorm = new RmsNorm(config.HiddenSize, config.RmsNormEps, factory);
        post_attention_layernorm = new RmsNorm(config.HiddenSize, config.RmsNormEps, factory);
        RegisterComponents();
    }

    public int LayerIndex { get; }
    public LlamaAttention Attention => self_attn;
    public LlamaMlp Mlp => mlp;
    public RmsNorm InputNorm => input_layernorm;
    public RmsNorm PostAttentionNorm => post_attention_layernorm;

    public override Tensor forward(Tensor hidden, RotaryTables rope) => Forward(hidden, rope, null);

    /// <summary>As <see cref="forward"/>, reading and extending <paramref name="cache"/> for generation.</summary>
    public Tensor Forward(Tensor hidden, RotaryTables rope, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var h = hidden + self_attn.Forward(input_layernorm.forward(hidden), rope, cache);
        var output = h + mlp.forward(post_attention_layernorm.forward(h));
        return output.MoveToOuterDisposeScope();
    }
}
