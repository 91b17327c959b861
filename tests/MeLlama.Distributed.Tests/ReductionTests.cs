using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Distributed.Tests;

public class ReductionTests
{
    [Fact]
    public void BFloat16RoundingMatchesTorch()
    {
        using var scope = NewDisposeScope();
        var random = new Random(7);
        var values = Enumerable.Range(0, 4099).Select(i => i switch
        {
            0 => float.NaN, 1 => float.PositiveInfinity, 2 => float.NegativeInfinity, 3 => float.MaxValue, 4 => -0f,
            5 => 1.00390625f /* exactly halfway between two bf16 values: ties to even */, 6 => 1.01171875f, 7 => float.Epsilon,
            _ => (float)((random.NextDouble() - 0.5) * Math.Pow(10, random.Next(-30, 30))),
        }).ToArray();
        var reference = tensor(values).to(ScalarType.BFloat16);
        var torchBits = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(reference.bytes).ToArray();
        for (int i = 0; i < values.Length; i++)
        {
            if (float.IsNaN(values[i])) Assert.True(float.IsNaN(Reduction.BFloat16ToFloat(Reduction.FloatToBFloat16(values[i]))));
            else Assert.Equal(torchBits[i], Reduction.FloatToBFloat16(values[i]));
        }
    }

    public static TheoryData<ScalarType, ReduceOp> Cases()
    {
        var data = new TheoryData<ScalarType, ReduceOp>();
        foreach (var t in new[] { ScalarType.Float32, ScalarType.Float64, ScalarType.BFloat16, ScalarType.Float16, ScalarType.Int64, ScalarType.Int32 })
            foreach (var op in new[] { ReduceOp.Sum, ReduceOp.Max, ReduceOp.Min })
                data.Add(t, op);
        return data;
    }

    /// <summary>The span kernels (vector body and scalar tail) agree with torch's own element-wise ops.</summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void CombineMatchesTorch(ScalarType dtype, ReduceOp op)
    {
        using var scope = NewDisposeScope();
        int n = 1003; // not a multiple of any vector width
        var a = (randn(n, dtype: ScalarType.Float64) * 50).to(dtype);
        var b = (randn(n, dtype: ScalarType.Float64) * 50).to(dtype);
        var expected = op switch
        {
            ReduceOp.Sum => dtype is ScalarType.BFloat16 or ScalarType.Float16 ? (a.to(ScalarType.Float32) + b.to(ScalarType.Float32)).to(dtype) : a + b,
            ReduceOp.Max => maximum(a, b),
            _ => minimum(a, b),
        };
        var dst = empty_like(a);
        Reduction.Combine(dtype, op, a.bytes, b.bytes, dst.bytes);
        Assert.True(expected.SameAs(dst), $"{dtype} {op} differs from torch");

        // In place (dst aliases a), as the ring's all-reduce uses it.
        Reduction.Combine(dtype, op, a.bytes, b.bytes, a.bytes);
        Assert.True(expected.SameAs(a));
    }

    [Fact]
    public void MaxAndMinPropagateNaN()
    {
        using var scope = NewDisposeScope();
        var a = tensor(new float[] { 1, float.NaN, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17 });
        var b = tensor(new float[] { 2, 0, float.NaN, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, float.NaN });
        foreach (var op in new[] { ReduceOp.Max, ReduceOp.Min })
        {
            var dst = empty_like(a);
            Reduction.Combine(ScalarType.Float32, op, a.bytes, b.bytes, dst.bytes);
            var got = dst.data<float>().ToArray();
            Assert.True(float.IsNaN(got[1]) && float.IsNaN(got[2]) && float.IsNaN(got[16]));
            Assert.Equal(op == ReduceOp.Max ? 2 : 1, got[0]);
        }
    }

    [Fact]
    public void DivideTruncatesIntegersAndRoundsFloats()
    {
        using var scope = NewDisposeScope();
        var ints = tensor(new long[] { 7, -7, 9 });
        Reduction.Divide(ScalarType.Int64, ints.bytes, 2);
        Assert.Equal(new long[] { 3, -3, 4 }, ints.data<long>().ToArray());
        var halves = tensor(new float[] { 3, 1 }).to(ScalarType.BFloat16);
        Reduction.Divide(ScalarType.BFloat16, halves.bytes, 3);
        Assert.True((tensor(new float[] { 3, 1 }) / 3).to(ScalarType.BFloat16).SameAs(halves));
    }

    [Fact]
    public void UnsupportedDTypeIsRefused() =>
        Assert.Throws<NotSupportedException>(() => Reduction.Combine(ScalarType.Bool, ReduceOp.Sum, new byte[4], new byte[4], new byte[4]));
}
