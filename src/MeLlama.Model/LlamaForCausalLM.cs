using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>
/// LLaMA-2 language model (HF <c>LlamaForCausalLM</c>): decoder stack, then a linear head to vocabulary
/// logits (or the transposed embedding when <see cref="LlamaConfig.TieWordEmbeddings"/>). Parameter names
/// are HF's (<c>model.embed_tokens.weight</c>, <c>model.layers.N.self_attn.q_proj.weight</c>, …,
/// <c>model.norm.weight</c>, <c>lm_head.weight</c>), so checkpoints map one to one.
/// </summary>
public sealed class LlamaForCausalLM : nn.Module<Tensor, Tensor>
{
    readonly LlamaModel model;
    readonly Linear? lm_head;

    /// <param name="config">Model shape.</param>
    /// <param name="device">Where parameters live (default CPU; <c>meta</c> for a shape-only model).</param>
    /// <param name="dtype">Parameter dtype: Float32, BFloat16 or Float16.</param>
    /// <param name="initialize">
    /// Fill parameters with HF's initialisation (normal(0, InitializerRange), norms = 1) from <paramref name="seed"/>.
    /// Loaders pass false: parameters are then uninitialised until the checkpoint is read into them.
    /// </param>
    public LlamaForCausalLM(LlamaConfig config, Device? device = null, ScalarType dtype = ScalarType.Float32, bool initialize = true, long seed = 0)
        : base(nameof(LlamaForCausalLM))
    {
        config.Validate();
        if (!is_floating_point(dtype)) throw new ArgumentException($"Model dtype must be floating point (got {dtype})");
        Config = config;
        var factory = new ParameterFactory(device ?? CPU, dtype);
        model = new LlamaModel(config, factory);
        lm_head = config.TieWordEmbeddings ? null : factory.Linear(config.HiddenSize, config.VocabSize);
        RegisterComponents();
        if (initialize && factory.Device.type != DeviceType.META) InitializeWeights(seed);
    }

    public LlamaConfig Config { get; }

    /// <summary>The decoder stack (prefix <c>model.</c>).</summary>
    public LlamaModel Model => model;
    public TokenEmbedding Embedding => model.Embedding;
    public IReadOnlyList<LlamaDecoderLayer> Layers => model.Layers;
    public RmsNorm FinalNorm => model.FinalNorm;
    /// <summary>Output projection; null when the head is tied to the embedding.</summary>
    public Linear? LmHead => lm_head;
    public RotaryEmbedding Rotary => model.Rotary;

    public Device Device => model.Embedding.Weight.device;
    public ScalarType Dtype => model.Embedding.Weight.dtype;

    /// <summary>inputIds [B, T] int64 → logits [B, T, VocabSize] in the model's dtype.</summary>
    public override Tensor forward(Tensor inputIds) => Forward(inputIds, null);

    /// <summary>As <see cref="forward"/>, continuing from (and extending) <paramref name="cache"/> when given.</summary>
    public Tensor Forward(Tensor inputIds, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var hidden = model.Forward(inputIds, cache);
        return Logits(hidden).MoveToOuterDisposeScope();
    }

    /// <summary>Output head on final (already normalised) hidden states [.., D] → [.., VocabSize].</summary>
    public Tensor Logits(Tensor normalisedHidden) =>
        lm_head is null
            ? nn.functional.linear(normalisedHidden, model.Embedding.Weight)
            : lm_head.forward(normalisedHidden);

    /// <summary>HF's initialisation: every linear and embedding weight ~ normal(0, InitializerRange), RMSNorm weights 1.</summary>
    public void InitializeWeights(long seed)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var generator = new Generator((ulong)seed, Device);
        foreach (var (name, parameter) in named_parameters())
        {
            if (name.EndsWith("norm.weight", StringComparison.Ordinal)) parameter.fill_(1.0);
            else parameter.normal_(0.0, Config.InitializerRange, generator);
        }
    }
}
