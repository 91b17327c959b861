using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Training.Finetune.Lora;

/// <summary>
/// One adapted projection. The adapter matrices are registered on the base <see cref="Linear"/> as submodules
/// <c>lora_A</c> and <c>lora_B</c>, so their parameter names are PEFT's (<c>…q_proj.lora_A.weight</c>), and they
/// act through a forward hook on it: y = W·x + scaling · B·A·dropout(x). Merged, W holds W + scaling·B·A and the hook
/// adds nothing.
/// </summary>
public sealed class LoraLayer : IDisposable
{
    readonly double _scaling, _dropout;
    readonly Generator _dropoutGenerator;
    nn.HookableModule<Func<nn.Module<Tensor, Tensor>, Tensor, Tensor>, Func<nn.Module<Tensor, Tensor>, Tensor, Tensor, Tensor>>.HookRemover? _hook;

    internal LoraLayer(string name, Linear baseLinear, LoraConfig config, Generator generator, Generator dropoutGenerator)
    {
        _dropoutGenerator = dropoutGenerator;
        Name = name;
        Base = baseLinear;
        _scaling = config.Scaling;
        _dropout = config.Dropout;
        var weight = baseLinear.weight!;
        long outFeatures = weight.shape[0], inFeatures = weight.shape[1];
        using (no_grad())
        {
            // PEFT's init: A ~ kaiming_uniform(a = √5), i.e. U(−1/√in, 1/√in); B = 0.
            double bound = 1.0 / Math.Sqrt(inFeatures);
            var a = empty([config.Rank, inFeatures], ScalarType.Float32).uniform_(-bound, bound, generator);
            A = nn.Linear(new Parameter(a.to(weight.dtype, weight.device), requires_grad: true));
            B = nn.Linear(new Parameter(zeros([outFeatures, config.Rank], weight.dtype, weight.device), requires_grad: true));
            a.Dispose();
        }
        baseLinear.register_module("lora_A", A);
        baseLinear.register_module("lora_B", B);
        _hook = baseLinear.register_forward_hook(AddAdapterOutput);
    }

    /// <summary>Module path of the base projection, e.g. <c>model.layers.0.self_attn.q_proj</c>.</summary>
    public string Name { get; }
    public Linear Base { get; }
    /// <summary>[rank, in] down-projection.</summary>
    public Linear A { get; }
    /// <summary>[out, rank] up-projection (zero at start).</summary>
    public Linear B { get; }
    public bool Merged { get; private set; }

    Tensor AddAdapterOutput(nn.Module<Tensor, Tensor> module, Tensor input, Tensor output)
    {
        if (Merged) return output;
        var x = _dropout > 0 && module.training ? Dropout(input) : input;
        return output + B.forward(A.forward(x)) * _scaling;
    }

    // Inverted dropout drawn from the adapter's own generator rather than torch's process-wide one: the trainer
    // reseeds it every step, so a resumed run draws the same masks as an uninterrupted one, and nothing else in the
    // process (another model, another thread) can shift the stream. TorchSharp's generators are CPU-only, so on CUDA
    // the mask comes from the device's default generator, which LoraModel.ReseedDropout reseeds the same way.
    Tensor Dropout(Tensor input)
    {
        using var keep = input.device_type == DeviceType.CPU
            ? empty_like(input).bernoulli_(1 - _dropout, _dropoutGenerator)
            : empty_like(input).bernoulli_(1 - _dropout);
        return input * keep / (1 - _dropout);
    }

    /// <summary>scaling · B·A [out, in] in fp32.</summary>
    public Tensor Delta()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        return (B.weight!.to(ScalarType.Float32).matmul(A.weight!.to(ScalarType.Float32)) * _scaling).MoveToOuterDisposeScope();
    }

    /// <summary>Folds the adapter into the base weight (W += scaling·B·A, computed in fp32).</summary>
    public void Merge()
    {
        if (Merged) return;
        AddToBase(+1);
        Merged = true;
    }

    /// <summary>Undoes <see cref="Merge"/> (W −= scaling·B·A).</summary>
    public void Unmerge()
    {
        if (!Merged) return;
        AddToBase(-1);
        Merged = false;
    }

    void AddToBase(int sign)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var w = Base.weight!;
        var merged = w.to(ScalarType.Float32) + Delta() * sign;
        w.copy_(merged.to(w.dtype));
    }

    public void Dispose()
    {
        _hook?.remove();
        _hook = null;
    }
}
