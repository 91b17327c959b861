using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Training.Metrics;

/// <summary>
/// Model FLOPs utilisation: achieved training FLOP/s over the device's measured matmul peak. Training FLOPs per
/// token follow the PaLM appendix: 6·N (forward + backward of every weight matmul; N excludes the input embedding,
/// which is a lookup) plus 12·L·d·T for attention scores and weighted values. Recomputation by activation
/// checkpointing is not counted (MFU, not hardware utilisation).
/// </summary>
public static class Throughput
{
    public static double TrainFlopsPerToken(long matmulParams, int layers, int hidden, int seqLen) =>
        6.0 * matmulParams + 12.0 * layers * hidden * seqLen;

    /// <summary>
    /// Times a large square matmul in <paramref name="dtype"/> on <paramref name="device"/> and returns FLOP/s: the best
    /// of three short trials, so a moment of contention from another process (one trial on a busy 2-core machine once
    /// measured 5.4 GFLOP/s against the usual ~160, printing an MFU of 460%) does not become the peak. Small enough to
    /// take well under a second on a laptop CPU.
    /// </summary>
    public static double MeasurePeakFlops(Device device, ScalarType dtype, int size = 0, int iterations = 0)
    {
        bool cuda = device.type == DeviceType.CUDA;
        if (size == 0) size = cuda ? 8192 : 1024;
        if (iterations == 0) iterations = cuda ? 20 : 6;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var a = randn(size, size, dtype: dtype, device: device);
        var b = randn(size, size, dtype: dtype, device: device);
        var c = empty(size, size, dtype: dtype, device: device);
        for (int i = 0; i < 2; i++) matmul(a, b, c); // warm up
        Sync(device);
        double best = 0;
        for (int trial = 0; trial < 3; trial++)
        {
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < iterations; i++) matmul(a, b, c);
            Sync(device);
            best = Math.Max(best, 2.0 * size * size * (double)size * iterations / sw.Elapsed.TotalSeconds);
        }
        return best;

        static void matmul(Tensor x, Tensor y, Tensor output)
        {
            using var r = x.matmul(y);
            output.copy_(r);
        }
    }

    public static void Sync(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
    }

    /// <summary>Resident memory of this process in MiB (on CUDA this is host memory only).</summary>
    public static double ProcessMemoryMb() => Environment.WorkingSet / (1024.0 * 1024.0);
}
