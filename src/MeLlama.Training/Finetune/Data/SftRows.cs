using static TorchSharp.torch;

namespace MeLlama.Training.Finetune.Data;

/// <summary>
/// Training samples for supervised fine-tuning in one long[] per row of seq_len + 1 tokens, as the pretraining stream
/// delivers them, with the loss mask folded in: a token the model must learn to predict is stored as its id, a token that
/// is only input (prompt, padding, BOS) as <c>~id</c> (negative). Inputs are row[:-1] with ids restored; labels are
/// row[1:] with input-only positions set to <see cref="IgnoreIndex"/>.
/// </summary>
public static class SftRows
{
    /// <summary>Label of positions the loss skips (PyTorch's cross_entropy default).</summary>
    public const long IgnoreIndex = -100;

    public static long Encode(int id, bool target) => target ? id : ~(long)id;

    public static bool IsTarget(long stored) => stored >= 0;

    public static int TokenId(long stored) => (int)(stored >= 0 ? stored : ~stored);

    /// <summary>rows [B, T+1] (encoded) → inputs [B, T] and labels [B, T] (ignore index where no loss).</summary>
    public static (Tensor Inputs, Tensor Labels) Split(Tensor rows)
    {
        using var scope = NewDisposeScope();
        long t = rows.shape[1] - 1;
        var negative = rows.lt(0);
        var ids = where(negative, rows.bitwise_not(), rows);
        var labels = where(negative, tensor(IgnoreIndex, ScalarType.Int64, rows.device), rows);
        return (ids.narrow(1, 0, t).MoveToOuterDisposeScope(), labels.narrow(1, 1, t).MoveToOuterDisposeScope());
    }

    /// <summary>Number of target positions (labels that count) in encoded rows.</summary>
    public static long CountTargets(ReadOnlySpan<long> rows, int sampleTokens)
    {
        long count = 0;
        for (int i = 0; i < rows.Length; i++)
            if (i % sampleTokens != 0 && rows[i] >= 0) count++;   // the first token of a row is never a label
        return count;
    }
}
