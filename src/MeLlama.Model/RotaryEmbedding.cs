using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>
/// Rotary position embedding (RoPE) in the "rotate-half" layout of Hugging Face checkpoints: the head
/// dimension is split into two halves [x₁ | x₂], and pair i is (x₁[i], x₂[i]) rotated by angle
/// position · θ^(−2i/d). (Meta's original checkpoints interleave pairs instead; HF conversion permuted
/// the q/k weights so that this layout gives the same model.)
/// </summary>
public sealed class RotaryEmbedding(int headDim, double theta)
{
    public int HeadDim { get; } = headDim;
    public double Theta { get; } = theta;

    /// <summary>cos/sin tables for positions start, …, start+length−1 in <paramref name="dtype"/> on <paramref name="device"/>.</summary>
    public RotaryTables Tables(long start, long length, Device device, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        // Angles in float64: at position 4000 an fp32 angle is off by ~2e-4 rad; the tables are tiny.
        var inverseFrequency = (arange(0, HeadDim, 2, ScalarType.Float64) * (-Math.Log(Theta) / HeadDim)).exp(); // θ^(−2i/d), [d/2]
        var positions = arange(start, start + length, 1, ScalarType.Float64);                         // [T]
        var angles = outer(positions, inverseFrequency);                                              // [T, d/2]
        var both = cat([angles, angles], -1);                                                         // [T, d]: same angle for both halves
        var cosTable = both.cos().to(dtype, device).MoveToOuterDisposeScope();
        var sinTable = both.sin().to(dtype, device).MoveToOuterDisposeScope();
        return new RotaryTables(cosTable, sinTable, start);
    }
}

/// <summary>cos and sin [T, HeadDim] for a run of positions starting at <see cref="Start"/>.</summary>
public sealed record RotaryTables(Tensor Cos, Tensor Sin, long Start)
{
    public long Length => Cos.shape[0];

    /// <summary>Rotates queries or keys x [B, heads, T, HeadDim]: x·cos + rotate_half(x)·sin.</summary>
    public Tensor Apply(Tensor x)
    {
        using var scope = NewDisposeScope();
        return (x * Cos + RotateHalf(x) * Sin).MoveToOuterDisposeScope();
    }

    /// <summary>[x₁ | x₂] → [−x₂ | x₁] along the last dimension.</summary>
    static Tensor RotateHalf(Tensor x)
    {
        long half = x.shape[^1] / 2;
        var first = x.narrow(-1, 0, half);
        var second = x.narrow(-1, half, half);
        return cat([second.neg(), first], -1);
    }
}
