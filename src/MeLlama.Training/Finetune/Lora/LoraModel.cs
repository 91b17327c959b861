using MeLlama.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Training.Finetune.Lora;

/// <summary>
/// LoRA adapters on a <see cref="LlamaForCausalLM"/>: every base parameter is frozen (requires_grad = false) and the
/// targeted projections of every layer get a <see cref="LoraLayer"/>. The adapters' parameters show up in
/// <c>model.named_parameters()</c> under PEFT's names, and they are the only ones that require gradients, so an
/// optimizer built over the trainable parameters holds state for the adapters only.
/// </summary>
public sealed class LoraModel : IDisposable
{
    const string AdapterMarker = ".lora_";
    readonly List<LoraLayer> _layers = [];

    LoraModel(LlamaForCausalLM model, LoraConfig config)
    {
        Model = model;
        Config = config;
    }

    public LlamaForCausalLM Model { get; }
    public LoraConfig Config { get; }
    public IReadOnlyList<LoraLayer> Layers => _layers;

    /// <summary>Source of the adapters' dropout masks; see <see cref="ReseedDropout"/>.</summary>
    public Generator DropoutGenerator { get; private set; } = null!;

    /// <summary>
    /// Makes the dropout masks of optimizer step <paramref name="step"/> a function of (seed, step) alone, so resuming
    /// from a checkpoint needs no generator state and reproduces the uninterrupted run exactly.
    /// </summary>
    public void ReseedDropout(ulong seed, long step)
    {
        ulong mixed = unchecked(seed * 0x9E3779B97F4A7C15UL + (ulong)step * 0xBF58476D1CE4E5B9UL + 0x94D049BB133111EBUL);
        DropoutGenerator.manual_seed((long)(mixed >> 1));
        // On CUDA the masks come from the device's default generator (LoraLayer.Dropout), reseeded the same way.
        if (Model.Device.type == DeviceType.CUDA) torch.cuda.manual_seed_all((long)(mixed >> 1));
    }

    /// <summary>Freezes <paramref name="model"/> and attaches fresh adapters (A drawn from <paramref name="seed"/>).</summary>
    public static LoraModel Apply(LlamaForCausalLM model, LoraConfig config, long seed = 0)
    {
        config.Validate();
        if (model.named_parameters().Any(p => IsAdapterParameter(p.name)))
            throw new InvalidOperationException("the model already has LoRA adapters");
        foreach (var p in model.parameters()) p.requires_grad = false;
        var lora = new LoraModel(model, config);
        var generator = new Generator((ulong)seed, CPU);
        lora.DropoutGenerator = new Generator((ulong)seed);
        foreach (var layer in model.Layers)
        {
            string prefix = $"model.layers.{layer.LayerIndex}.";
            foreach (var target in LoraConfig.AllProjections.Where(config.TargetModules.Contains))
            {
                var (path, linear) = Projection(layer, target);
                lora._layers.Add(new LoraLayer(prefix + path, linear, config, generator, lora.DropoutGenerator));
            }
        }
        return lora;
    }

    static (string Path, Linear Linear) Projection(LlamaDecoderLayer layer, string target) => target switch
    {
        "q_proj" => ("self_attn.q_proj", layer.Attention.QProj),
        "k_proj" => ("self_attn.k_proj", layer.Attention.KProj),
        "v_proj" => ("self_attn.v_proj", layer.Attention.VProj),
        "o_proj" => ("self_attn.o_proj", layer.Attention.OProj),
        "gate_proj" => ("mlp.gate_proj", layer.Mlp.GateProj),
        "up_proj" => ("mlp.up_proj", layer.Mlp.UpProj),
        "down_proj" => ("mlp.down_proj", layer.Mlp.DownProj),
        _ => throw new ArgumentException($"unknown projection {target}"),
    };

    public static bool IsAdapterParameter(string name) => name.Contains(AdapterMarker, StringComparison.Ordinal);

    /// <summary>Adapter parameters with their model names (<c>model.layers.0.self_attn.q_proj.lora_A.weight</c>, …).</summary>
    public IEnumerable<(string Name, Parameter Parameter)> AdapterParameters()
    {
        foreach (var layer in _layers)
        {
            yield return (layer.Name + ".lora_A.weight", layer.A.weight!);
            yield return (layer.Name + ".lora_B.weight", layer.B.weight!);
        }
    }

    public long AdapterParameterCount() => AdapterParameters().Sum(p => p.Parameter.numel());

    /// <summary>The base model's parameters (adapters excluded) with HF names: what an exported model folder holds.</summary>
    public IEnumerable<(string Name, Tensor Tensor)> BaseParameters() =>
        Model.named_parameters().Where(p => !IsAdapterParameter(p.name)).Select(p => (p.name, (Tensor)p.parameter));

    public bool Merged => _layers.Count > 0 && _layers.All(l => l.Merged);

    public void Merge()
    {
        foreach (var layer in _layers) layer.Merge();
    }

    public void Unmerge()
    {
        foreach (var layer in _layers) layer.Unmerge();
    }

    /// <summary>Copies adapter weights in by name (from a checkpoint or a PEFT file); every adapter must be present.</summary>
    public void LoadAdapterWeights(Func<string, Tensor?> read, string source)
    {
        using var _ = no_grad();
        foreach (var (name, parameter) in AdapterParameters())
        {
            using var tensor = read(name) ?? throw new InvalidDataException($"{source}: adapter tensor {name} is missing");
            if (!tensor.shape.SequenceEqual(parameter.shape))
                throw new InvalidDataException($"{source}: adapter tensor {name} has shape [{string.Join(", ", tensor.shape)}], expected [{string.Join(", ", parameter.shape)}] (rank or model shape differs)");
            parameter.copy_(tensor);
        }
    }

    /// <summary>Detaches the hooks (the adapter modules stay registered on the projections but no longer act).</summary>
    public void Dispose()
    {
        foreach (var layer in _layers) layer.Dispose();
        DropoutGenerator.Dispose();
    }
}
