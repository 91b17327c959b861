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
        // A CPU generator whatever the model's device: TorchSharp 0.107 creates only CPU generators (its device
        // argument is ignored), and drawing on the host makes a CUDA-built model bit-identical to a CPU-built one.
        var generator = new Generator((ulong)seed);
        foreach (var (name, parameter) in named_parameters()) InitializeParameter(name, parameter, Config.InitializerRange, generator);
    }

    /// <summary>
    /// The rule of <see cref="InitializeWeights"/> for one parameter: norms 1, everything else normal(0, std) drawn
    /// from <paramref name="generator"/>. Exposed so that a sharded engine can initialise a model parameter by
    /// parameter (in <c>named_parameters()</c> order, one generator seeded as here, each drawn into a tensor of the
    /// parameter's shape, dtype and device) and get exactly the values a full-size model gets. <paramref name="generator"/>
    /// is a CPU generator; a parameter elsewhere (CUDA) is drawn on the host in its dtype and copied over, so the values
    /// do not depend on the device.
    /// </summary>
    public static void InitializeParameter(string name, Tensor parameter, double std, Generator generator)
    {
        using var noGrad = no_grad();
        if (name.EndsWith("norm.weight", StringComparison.Ordinal)) parameter.fill_(1.0);
        else if (parameter.device_type == DeviceType.CPU) parameter.normal_(0.0, std, generator);
        else
        {
            using var host = empty(parameter.shape, parameter.dtype, CPU).normal_(0.0, std, generator);
            parameter.copy_(host);
        }
    }

    /// <summary>
    /// Gives every parameter new storage: <paramref name="replacement"/> gets each parameter's HF name and current
    /// tensor and returns the parameter to use instead (same dtype; any shape, device and storage). For a model
    /// built on the meta device (shapes only): a sharded engine swaps in real tensors on its compute device, full-size
    /// or empty placeholders it re-points at gathered buffers later (<c>Tensor.set_</c> cannot move a meta tensor to
    /// another device). The old parameters are disposed (as TorchSharp's <c>Linear.weight</c> setter does); parameter objects taken earlier are stale afterwards.
    /// </summary>
    public void ReplaceParameters(Func<string, Parameter, Parameter> replacement)
    {
        var before = named_parameters().Select(p => p.name).ToList();
        var setters = new List<(string Name, Parameter Current, Action<Parameter> Set)>
        {
            ("model.embed_tokens.weight", Embedding.Weight, model.Embedding.ReplaceWeight),
        };
        foreach (var layer in Layers)
        {
            string prefix = $"model.layers.{layer.LayerIndex}.";
            foreach (var (name, linear) in new[]
            {
                ("self_attn.q_proj", layer.Attention.QProj), ("self_attn.k_proj", layer.Attention.KProj),
                ("self_attn.v_proj", layer.Attention.VProj), ("self_attn.o_proj", layer.Attention.OProj),
                ("mlp.gate_proj", layer.Mlp.GateProj), ("mlp.up_proj", layer.Mlp.UpProj), ("mlp.down_proj", layer.Mlp.DownProj),
            })
                setters.Add((prefix + name + ".weight", linear.weight, p => linear.weight = p));
            setters.Add((prefix + "input_layernorm.weight", layer.InputNorm.Weight, layer.InputNorm.ReplaceWeight));
            setters.Add((prefix + "post_attention_layernorm.weight", layer.PostAttentionNorm.Weight, layer.PostAttentionNorm.ReplaceWeight));
        }
        setters.Add(("model.norm.weight", FinalNorm.Weight, FinalNorm.ReplaceWeight));
        if (lm_head is { } head) setters.Add(("lm_head.weight", head.weight, p => head.weight = p));
        if (!before.Order(StringComparer.Ordinal).SequenceEqual(setters.Select(s => s.Name).Order(StringComparer.Ordinal)))
            throw new InvalidOperationException("ReplaceParameters does not know every parameter of the model: " + string.Join(", ", before.Except(setters.Select(s => s.Name))));
        foreach (var (name, current, set) in setters)
        {
            var next = replacement(name, current);
            if (next.dtype != current.dtype) throw new ArgumentException($"{name}: the replacement is {next.dtype}, the parameter {current.dtype}");
            if (ReferenceEquals(next, current)) continue;
            set(next); // disposes the old parameter
        }
    }
}
