using static TorchSharp.torch;

namespace MeLlama.Training.Engine;

/// <summary>
/// How a micro-batch of rows [B, T+1] becomes model inputs [B, T], labels [B, T] and a count of the positions that carry
/// loss. The sharded engine divides every rank's summed token NLL by the count summed over ranks and micro-batches, so
/// its gradient equals the one-process mean over the whole global batch whatever the rows are.
/// </summary>
public interface IBatchLabels
{
    /// <summary>Inputs and labels of encoded rows (on the rows' device); labels may hold <see cref="IgnoreIndex"/>.</summary>
    (Tensor Inputs, Tensor Labels) Split(Tensor rows);

    /// <summary>Positions of <paramref name="rows"/> whose label counts in the loss.</summary>
    long CountTargets(Tensor rows);

    /// <summary>The label of positions without loss (PyTorch's cross_entropy default, so the pretraining loss is unchanged).</summary>
    public const long IgnoreIndex = -100;
}

/// <summary>Pretraining rows: every token predicts the next one; every position counts (no device sync to count).</summary>
public sealed class NextTokenLabels : IBatchLabels
{
    public static NextTokenLabels Instance { get; } = new();

    public (Tensor Inputs, Tensor Labels) Split(Tensor rows)
    {
        long t = rows.shape[1] - 1;
        return (rows.narrow(1, 0, t), rows.narrow(1, 1, t));
    }

    public long CountTargets(Tensor rows) => rows.shape[0] * (rows.shape[1] - 1);
}
