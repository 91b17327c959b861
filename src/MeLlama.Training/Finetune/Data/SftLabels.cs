using MeLlama.Training.Engine;
using static TorchSharp.torch;

namespace MeLlama.Training.Finetune.Data;

/// <summary>Fine-tuning rows (<see cref="SftRows"/>: loss mask folded into the ids): only assistant tokens are labels.</summary>
public sealed class SftLabels : IBatchLabels
{
    public static SftLabels Instance { get; } = new();

    public (Tensor Inputs, Tensor Labels) Split(Tensor rows) => SftRows.Split(rows);

    public long CountTargets(Tensor rows)
    {
        using var scope = NewDisposeScope();
        return rows.narrow(1, 1, rows.shape[1] - 1).ge(0).sum().item<long>();
    }
}
