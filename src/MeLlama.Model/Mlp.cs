using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>SwiGLU feed-forward block: down(silu(gate(x)) ⊙ up(x)).</summary>
public sealed class LlamaMlp : nn.Module<Tensor, Tensor>
{
    readonly Linear gate_proj, up_proj, down_proj;

    public LlamaMlp(LlamaConfig config, ParameterFactory factory) : base("mlp")
    {
        gate_proj = factory.Linear(config.HiddenSize, config.IntermediateSize);
        up_proj = factory.Linear(config.HiddenSize, config.IntermediateSize);
        down_proj = factory.Linear(config.IntermediateSize, config.HiddenSize);
        RegisterComponents();
    }

    public Linear GateProj => gate_proj;
    public Linear UpProj => up_proj;
    public Linear DownProj => down_proj;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        // call() rather than forward() so forward hooks (LoRA adapters) on the projections run.
        var gated = nn.functional.silu(gate_proj.call(x)) * up_proj.call(x);
        return down_proj.call(gated).MoveToOuterDisposeScope();
    }
}
