using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Training.Optim;

/// <summary>
/// Single-pass optimizer arithmetic for fp32 contiguous CPU tensors, written against the raw storage with SIMD
/// and split over torch's intra-op thread count. On CPU the AdamW update is memory-bound: done as torch ops
/// (mul_, add_, mul_, addcmul_, sqrt, div_, add_, addcdiv_ and a separate clipping mul_) it streams the parameter
/// and its state through memory about ten times and allocates a temporary per parameter; here each element of
/// parameter, gradient and both moments is read once and written once (TorchSharp exposes neither torch's
/// <c>_fused_adamw_</c> nor the <c>_foreach_</c> ops). Same formulas, in the same order, as the torch-op path of
/// <see cref="MasterAdamW"/>; results agree to float rounding (the tests compare both).
/// </summary>
internal static unsafe class CpuFusedKernels
{
    /// <summary>Elements per work item: 64 Ki floats = 256 KiB per stream, small enough to balance two cores.</summary>
    const long Chunk = 1 << 16;

    /// <summary>True when every tensor is fp32, contiguous and in CPU memory (where the kernels apply).</summary>
    public static bool Supports(params Tensor[] tensors)
    {
        foreach (var t in tensors)
            if (t.device_type != DeviceType.CPU || t.dtype != ScalarType.Float32 || !t.is_contiguous()) return false;
        return true;
    }

    static float* Pointer(Tensor t)
    {
        using var storage = t.storage<float>();
        return (float*)storage.data_ptr() + t.storage_offset();
    }

    /// <summary>Scalars of one AdamW update, already in the float precision torch would use for them.</summary>
    public readonly struct AdamWScalars(double lr, double beta1, double beta2, double eps, double weightDecay, double biasCorrection1, double biasCorrection2, double gradScale)
    {
        public readonly float Decay = (float)(1 - lr * weightDecay);
        public readonly float Beta1 = (float)beta1, OneMinusBeta1 = (float)(1 - beta1);
        public readonly float Beta2 = (float)beta2, OneMinusBeta2 = (float)(1 - beta2);
        public readonly float SqrtBiasCorrection2 = (float)Math.Sqrt(biasCorrection2);
        public readonly float Eps = (float)eps;
        public readonly float NegStepSize = (float)(-lr / biasCorrection1);
        public readonly float GradScale = (float)gradScale;
        public readonly bool ApplyDecay = weightDecay != 0;
    }

    /// <summary>
    /// In place: p ← p·(1 − lr·wd); m ← β₁m + (1 − β₁)ĝ; v ← β₂v + (1 − β₂)ĝ²; p ← p − (lr/bc₁)·m / (√v/√bc₂ + ε),
    /// with ĝ = gradScale·g (gradient clipping folded in; <paramref name="grad"/> itself is not changed).
    /// </summary>
    public static void AdamW(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, in AdamWScalars k)
    {
        long n = param.numel();
        if (grad.numel() != n || expAvg.numel() != n || expAvgSq.numel() != n) throw new ArgumentException("AdamW tensors differ in size");
        float* p = Pointer(param), g = Pointer(grad), m = Pointer(expAvg), v = Pointer(expAvgSq);
        var scalars = k;
        For(n, (start, end) => AdamWRange(p, g, m, v, start, end, scalars));
    }

    static void AdamWRange(float* p, float* g, float* m, float* v, long start, long end, in AdamWScalars k)
    {
        long i = start;
        if (Vector256.IsHardwareAccelerated)
        {
            var decay = Vector256.Create(k.Decay);
            var b1 = Vector256.Create(k.Beta1);
            var c1 = Vector256.Create(k.OneMinusBeta1);
            var b2 = Vector256.Create(k.Beta2);
            var c2 = Vector256.Create(k.OneMinusBeta2);
            var sqrtBc2 = Vector256.Create(k.SqrtBiasCorrection2);
            var eps = Vector256.Create(k.Eps);
            var step = Vector256.Create(k.NegStepSize);
            var scale = Vector256.Create(k.GradScale);
            for (; i + Vector256<float>.Count <= end; i += Vector256<float>.Count)
            {
                var gv = Vector256.Load(g + i) * scale;
                var pv = Vector256.Load(p + i);
                if (k.ApplyDecay) pv *= decay;
                var mv = Vector256.Load(m + i) * b1 + gv * c1;
                var vv = Vector256.Load(v + i) * b2 + c2 * gv * gv;
                var denom = Vector256.Sqrt(vv) / sqrtBc2 + eps;
                pv += step * (mv / denom);
                mv.Store(m + i);
                vv.Store(v + i);
                pv.Store(p + i);
            }
        }
        for (; i < end; i++)
        {
            float gi = g[i] * k.GradScale;
            float pi = k.ApplyDecay ? p[i] * k.Decay : p[i];
            float mi = m[i] * k.Beta1 + gi * k.OneMinusBeta1;
            float vi = v[i] * k.Beta2 + k.OneMinusBeta2 * gi * gi;
            float denom = MathF.Sqrt(vi) / k.SqrtBiasCorrection2 + k.Eps;
            m[i] = mi;
            v[i] = vi;
            p[i] = pi + k.NegStepSize * (mi / denom);
        }
    }

    /// <summary>Σ x² over all elements, accumulated in float64 (deterministic: fixed chunks summed in order).</summary>
    public static double SumOfSquares(Tensor tensor)
    {
        long n = tensor.numel();
        if (n == 0) return 0;
        float* x = Pointer(tensor);
        long chunks = (n + Chunk - 1) / Chunk;
        var partial = new double[chunks];
        For(n, (start, end) => partial[start / Chunk] = SumOfSquaresRange(x, start, end));
        double sum = 0;
        foreach (var s in partial) sum += s;
        return sum;
    }

    static double SumOfSquaresRange(float* x, long start, long end)
    {
        long i = start;
        double sum = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var acc0 = Vector256<double>.Zero;
            var acc1 = Vector256<double>.Zero;
            for (; i + Vector256<float>.Count <= end; i += Vector256<float>.Count)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(x + i));
                acc0 += lo * lo;
                acc1 += hi * hi;
            }
            sum = Vector256.Sum(acc0 + acc1);
        }
        for (; i < end; i++) sum += (double)x[i] * x[i];
        return sum;
    }

    /// <summary>Runs <paramref name="body"/> over [0, n) in <see cref="Chunk"/>-sized ranges on up to torch's thread count.</summary>
    static void For(long n, Action<long, long> body)
    {
        long chunks = (n + Chunk - 1) / Chunk;
        int threads = Math.Max(1, get_num_threads());
        if (chunks == 1 || threads == 1)
        {
            for (long c = 0; c < chunks; c++) body(c * Chunk, Math.Min(n, (c + 1) * Chunk));
            return;
        }
        Parallel.For(0L, chunks, new ParallelOptions { MaxDegreeOfParallelism = threads }, c => body(c * Chunk, Math.Min(n, (c + 1) * Chunk)));
    }
}
