using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>
/// The decoder stack without the output head (HF <c>LlamaModel</c>, parameter prefix <c>model.</c>):
/// token embedding → NumLayers decoder layers → final RMSNorm.
/// </summary>
public sealed class LlamaModel : nn.Module<Tensor, Tensor>
{
    readonly TokenEmbedding embed_tokens;
    readonly ModuleList<LlamaDecoderLayer> layers;
    readonly LlamaDecoderLayer[] layerArray;   // same modules, for typed read-only access (not registered twice: arrays are ignored)
    readonly RmsNorm norm;

    public LlamaModel(LlamaConfig config, ParameterFactory factory) : base("model")
    {
        Config = config;
        Rotary = new RotaryEmbedding(config.HeadDim, config.RopeTheta);
        embed_tokens = new TokenEmbedding(config.VocabSize, config.HiddenSize, factory);
        layerArray = Enumerable.Range(0, config.NumLayers).Select(i => new LlamaDecoderLayer(config, i, factory)).ToArray();
        layers = new ModuleList<LlamaDecoderLayer>(layerArray);
        norm = new RmsNorm(config.HiddenSize, config.RmsNormEps, factory);
        RegisterComponents();
    }

    public LlamaConfig Config { get; }
    public RotaryEmbedding Rotary { get; }
    public TokenEmbedding Embedding => embed_tokens;
    public IReadOnlyList<LlamaDecoderLayer> Layers => layerArray;
    public RmsNorm FinalNorm => norm;

    /// <summary>inputIds [B, T] → normalised hidden states [B, T, D].</summary>
    public override Tensor forward(Tensor inputIds) => Forward(inputIds, null);

    /// <summary>
    /// As <see cref="forward"/>; with a cache, the tokens take positions cache.Length…, attend to the cached
    /// ones, and are appended to it.
    /// </summary>
    public Tensor Forward(Tensor inputIds, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        long t = inputIds.shape[1];
        long start = cache?.Length ?? 0;
        var hidden = embed_tokens.forward(inputIds);
        var rope = Rotary.Tables(start, t, hidden.device, hidden.dtype);
        foreach (var layer in layerArray) hidden = layer.Forward(hidden, rope, cache);
        cache?.Advance(t);
        return norm.forward(hidden).MoveToOuterDisposeScope();
    }
}
