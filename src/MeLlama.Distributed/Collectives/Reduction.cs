using System.Numerics;
using System.Runtime.InteropServices;
using TorchSharp;

namespace MeLlama.Distributed;

/// <summary>
/// Element-wise reduction kernels on raw spans, vectorised with <see cref="Vector{T}"/>. bf16 and fp16 are
/// reduced in fp32 and rounded back to nearest-even after each combination, like NCCL's ring does per hop.
/// Max/Min propagate NaN (as torch does), so a NaN gradient is never hidden by a reduction.
/// </summary>
public static class Reduction
{
    public static bool SupportsReduction(torch.ScalarType dtype) => dtype is
        torch.ScalarType.Float32 or torch.ScalarType.Float64 or torch.ScalarType.BFloat16 or torch.ScalarType.Float16
        or torch.ScalarType.Int64 or torch.ScalarType.Int32;

    /// <summary>dst = a ⊕ b element-wise. <paramref name="dst"/> may be exactly <paramref name="a"/> or <paramref name="b"/>; no other overlap.</summary>
    public static void Combine(torch.ScalarType dtype, ReduceOp op, ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, Span<byte> dst)
    {
        if (a.Length != dst.Length || b.Length != dst.Length) throw new ArgumentException("reduction spans differ in length");
        switch (dtype)
        {
            case torch.ScalarType.Float32: Floating<float>(op, Cast<float>(a), Cast<float>(b), Cast<float>(dst)); break;
            case torch.ScalarType.Float64: Floating<double>(op, Cast<double>(a), Cast<double>(b), Cast<double>(dst)); break;
            case torch.ScalarType.Int64: Integer<long>(op, Cast<long>(a), Cast<long>(b), Cast<long>(dst)); break;
            case torch.ScalarType.Int32: Integer<int>(op, Cast<int>(a), Cast<int>(b), Cast<int>(dst)); break;
            case torch.ScalarType.BFloat16: BFloat16(op, Cast<ushort>(a), Cast<ushort>(b), Cast<ushort>(dst)); break;
            case torch.ScalarType.Float16: Half16(op, Cast<Half>(a), Cast<Half>(b), Cast<Half>(dst)); break;
            default: throw new NotSupportedException($"reductions on {dtype} tensors are not supported");
        }
    }

    /// <summary>data /= divisor (the second half of <see cref="ReduceOp.Avg"/>).</summary>
    public static void Divide(torch.ScalarType dtype, Span<byte> data, int divisor)
    {
        switch (dtype)
        {
            case torch.ScalarType.Float32: DivideNumbers(Cast<float>(data), divisor); break;
            case torch.ScalarType.Float64: DivideNumbers(Cast<double>(data), divisor); break;
            case torch.ScalarType.Int64: DivideNumbers(Cast<long>(data), divisor); break;
            case torch.ScalarType.Int32: DivideNumbers(Cast<int>(data), divisor); break;
            case torch.ScalarType.BFloat16:
            {
                var s = Cast<ushort>(data);
                for (int i = 0; i < s.Length; i++) s[i] = FloatToBFloat16(BFloat16ToFloat(s[i]) / divisor);
                break;
            }
            case torch.ScalarType.Float16:
            {
                var s = Cast<Half>(data);
                for (int i = 0; i < s.Length; i++) s[i] = (Half)((float)s[i] / divisor);
                break;
            }
            default: throw new NotSupportedException($"reductions on {dtype} tensors are not supported");
        }
    }

    public static float BFloat16ToFloat(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>Round to nearest even, NaN stays a (quiet) NaN: the same conversion as torch's <c>.to(bfloat16)</c>.</summary>
    public static ushort FloatToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x0040);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    static Span<T> Cast<T>(Span<byte> s) where T : struct => MemoryMarshal.Cast<byte, T>(s);
    static ReadOnlySpan<T> Cast<T>(ReadOnlySpan<byte> s) where T : struct => MemoryMarshal.Cast<byte, T>(s);

    static void Floating<T>(ReduceOp op, ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> d) where T : struct, IFloatingPointIeee754<T>
    {
        switch (op)
        {
            case ReduceOp.Sum or ReduceOp.Avg: Apply<T, AddOp<T>>(a, b, d); break;
            case ReduceOp.Max: Apply<T, FloatMaxOp<T>>(a, b, d); break;
            case ReduceOp.Min: Apply<T, FloatMinOp<T>>(a, b, d); break;
            default: throw new ArgumentOutOfRangeException(nameof(op));
        }
    }

    static void Integer<T>(ReduceOp op, ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> d) where T : struct, IBinaryInteger<T>
    {
        switch (op)
        {
            case ReduceOp.Sum or ReduceOp.Avg: Apply<T, AddOp<T>>(a, b, d); break;
            case ReduceOp.Max: Apply<T, IntMaxOp<T>>(a, b, d); break;
            case ReduceOp.Min: Apply<T, IntMinOp<T>>(a, b, d); break;
            default: throw new ArgumentOutOfRangeException(nameof(op));
        }
    }

    static void BFloat16(ReduceOp op, ReadOnlySpan<ushort> a, ReadOnlySpan<ushort> b, Span<ushort> d)
    {
        switch (op)
        {
            case ReduceOp.Sum or ReduceOp.Avg: ApplyBFloat16<AddOp<float>>(a, b, d); break;
            case ReduceOp.Max: ApplyBFloat16<FloatMaxOp<float>>(a, b, d); break;
            case ReduceOp.Min: ApplyBFloat16<FloatMinOp<float>>(a, b, d); break;
            default: throw new ArgumentOutOfRangeException(nameof(op));
        }
    }

    static void Half16(ReduceOp op, ReadOnlySpan<Half> a, ReadOnlySpan<Half> b, Span<Half> d)
    {
        for (int i = 0; i < d.Length; i++)
        {
            float x = (float)a[i], y = (float)b[i];
            d[i] = (Half)(op switch
            {
                ReduceOp.Sum or ReduceOp.Avg => AddOp<float>.Apply(x, y),
                ReduceOp.Max => FloatMaxOp<float>.Apply(x, y),
                ReduceOp.Min => FloatMinOp<float>.Apply(x, y),
                _ => throw new ArgumentOutOfRangeException(nameof(op)),
            });
        }
    }

    static void Apply<T, TOp>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> d) where T : struct where TOp : IBinaryOp<T>
    {
        int i = 0, n = d.Length;
        if (Vector.IsHardwareAccelerated && Vector<T>.IsSupported)
        {
            int w = Vector<T>.Count;
            for (; i <= n - w; i += w)
                TOp.Apply(new Vector<T>(a[i..]), new Vector<T>(b[i..])).CopyTo(d[i..]);
        }
        for (; i < n; i++) d[i] = TOp.Apply(a[i], b[i]);
    }

    static void ApplyBFloat16<TOp>(ReadOnlySpan<ushort> a, ReadOnlySpan<ushort> b, Span<ushort> d) where TOp : IBinaryOp<float>
    {
        int i = 0, n = d.Length;
        if (Vector.IsHardwareAccelerated)
        {
            int w = Vector<ushort>.Count;
            for (; i <= n - w; i += w)
            {
                Vector.Widen(new Vector<ushort>(a[i..]), out Vector<uint> aLo, out Vector<uint> aHi);
                Vector.Widen(new Vector<ushort>(b[i..]), out Vector<uint> bLo, out Vector<uint> bHi);
                var lo = RoundToBFloat16(TOp.Apply(Vector.AsVectorSingle(aLo << 16), Vector.AsVectorSingle(bLo << 16)));
                var hi = RoundToBFloat16(TOp.Apply(Vector.AsVectorSingle(aHi << 16), Vector.AsVectorSingle(bHi << 16)));
                Vector.Narrow(lo, hi).CopyTo(d[i..]);
            }
        }
        for (; i < n; i++) d[i] = FloatToBFloat16(TOp.Apply(BFloat16ToFloat(a[i]), BFloat16ToFloat(b[i])));
    }

    /// <summary>Vector form of <see cref="FloatToBFloat16"/>; the result's low 16 bits are the bf16 bits.</summary>
    static Vector<uint> RoundToBFloat16(Vector<float> f)
    {
        var bits = Vector.AsVectorUInt32(f);
        var rounded = (bits + new Vector<uint>(0x7FFF) + ((bits >> 16) & Vector<uint>.One)) >> 16;
        var nan = Vector.AsVectorUInt32(Vector.OnesComplement(Vector.Equals(f, f)));
        return Vector.ConditionalSelect(nan, (bits >> 16) | new Vector<uint>(0x0040), rounded);
    }

    static void DivideNumbers<T>(Span<T> data, int divisor) where T : struct, INumber<T>
    {
        var d = T.CreateChecked(divisor);
        for (int i = 0; i < data.Length; i++) data[i] /= d;
    }

    interface IBinaryOp<T> where T : struct
    {
        static abstract T Apply(T a, T b);
        static abstract Vector<T> Apply(Vector<T> a, Vector<T> b);
    }

    readonly struct AddOp<T> : IBinaryOp<T> where T : struct, INumber<T>
    {
        public static T Apply(T a, T b) => a + b;
        public static Vector<T> Apply(Vector<T> a, Vector<T> b) => a + b;
    }

    readonly struct IntMaxOp<T> : IBinaryOp<T> where T : struct, IBinaryInteger<T>
    {
        public static T Apply(T a, T b) => T.Max(a, b);
        public static Vector<T> Apply(Vector<T> a, Vector<T> b) => Vector.Max(a, b);
    }

    readonly struct IntMinOp<T> : IBinaryOp<T> where T : struct, IBinaryInteger<T>
    {
        public static T Apply(T a, T b) => T.Min(a, b);
        public static Vector<T> Apply(Vector<T> a, Vector<T> b) => Vector.Min(a, b);
    }

    /// <summary>Max that returns NaN when either side is NaN (a + b is NaN exactly then).</summary>
    readonly struct FloatMaxOp<T> : IBinaryOp<T> where T : struct, IFloatingPointIeee754<T>
    {
        public static T Apply(T a, T b) => T.IsNaN(a) || T.IsNaN(b) ? a + b : T.Max(a, b);
        public static Vector<T> Apply(Vector<T> a, Vector<T> b) =>
            Vector.ConditionalSelect(Vector.Equals(a, a) & Vector.Equals(b, b), Vector.Max(a, b), a + b);
    }

    readonly struct FloatMinOp<T> : IBinaryOp<T> where T : struct, IFloatingPointIeee754<T>
    {
        public static T Apply(T a, T b) => T.IsNaN(a) || T.IsNaN(b) ? a + b : T.Min(a, b);
        public static Vector<T> Apply(Vector<T> a, Vector<T> b) =>
            Vector.ConditionalSelect(Vector.Equals(a, a) & Vector.Equals(b, b), Vector.Min(a, b), a + b);
    }
}
