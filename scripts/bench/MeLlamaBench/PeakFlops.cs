using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlamaBench;

/// <summary>
/// The device's matmul peak, measured in this process the way the PyTorch reference measures its own: an n×n by
/// n×n product written into a preallocated output (no allocation in the loop), several trials, best and median.
/// MFU is quoted against the best trial (the most favourable peak, hence the most conservative MFU).
/// </summary>
static class PeakFlops
{
    /// <param name="BestFlopsPerCpuSecond">FLOPs per CPU-second of this process (best trial): with one thread, the rate a core
    /// delivers while it runs, whatever share of the machine the process gets.</param>
    public sealed record Result(int Size, string Dtype, double BestFlops, double MedianFlops, double BestFlopsPerCpuSecond, int Trials, int MatmulsPerTrial)
    {
        public Dictionary<string, object> Describe() => new()
        {
            ["matmul_size"] = Size, ["dtype"] = Dtype, ["best_gflops"] = BestFlops / 1e9, ["median_gflops"] = MedianFlops / 1e9,
            ["best_gflops_per_cpu_second"] = BestFlopsPerCpuSecond / 1e9, ["trials"] = Trials, ["matmuls_per_trial"] = MatmulsPerTrial,
        };
    }

    public static Result Measure(Device device, ScalarType dtype, int size, int trials = 5, double trialSeconds = 0.25)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var a = randn([size, size], dtype, device);
        var b = randn([size, size], dtype, device);
        var c = empty([size, size], dtype, device);
        // Warm-up: thread pool start, first-touch of c, GEMM packing buffers; also sizes the trial.
        var warm = Stopwatch.StartNew();
        int warmups = 0;
        do { c.addmm_(a, b, beta: 0, alpha: 1); warmups++; Sync(device); } while (warm.Elapsed.TotalSeconds < 0.1 || warmups < 2);
        double perMatmul = warm.Elapsed.TotalSeconds / warmups;
        int reps = Math.Max(1, (int)Math.Round(trialSeconds / perMatmul));
        var rates = new List<double>();
        double bestPerCpu = 0;
        for (int t = 0; t < trials; t++)
        {
            double cpu = CpuClock.ProcessSeconds();
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < reps; i++) c.addmm_(a, b, beta: 0, alpha: 1);
            Sync(device);
            double flops = 2.0 * size * size * (double)size * reps;
            rates.Add(flops / sw.Elapsed.TotalSeconds);
            bestPerCpu = Math.Max(bestPerCpu, flops / (CpuClock.ProcessSeconds() - cpu));
        }
        rates.Sort();
        return new Result(size, dtype.ToString(), rates[^1], rates[rates.Count / 2], bestPerCpu, trials, reps);
    }

    public static void Sync(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
    }
}
