using System.Diagnostics;
using MeLlama.Training.Engine;
using MeLlama.Training.Loop;
using MeLlama.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlamaBench;

/// <summary>
/// Tokens/s and MFU of MeLlama's training step (<see cref="SingleProcessTrainStep"/>: forward, cross-entropy,
/// backward, grad-norm + clipping, AdamW), the step the trainer runs, on random token ids of the bench shape.
/// With --phases, a second timed loop runs the same operations one phase at a time to show where the time goes.
/// </summary>
static class TrainBench
{
    public static Dictionary<string, object> Run(Args args)
    {
        var shape = BenchShape.FromArgs(args);
        var device = new Device(args.Get("device", "cpu"));
        var dtype = args.Get("dtype", "fp32") switch
        {
            "fp32" => ScalarType.Float32,
            "bf16" => ScalarType.BFloat16,
            var other => throw new ArgumentException($"--dtype {other}: fp32 or bf16"),
        };
        int warmup = args.Int("warmup", 2), steps = args.Int("steps", 5);
        int threads = args.Int("threads", 0);
        int peakSize = args.Int("peak-size", device.type == DeviceType.CUDA ? 8192 : 2048);
        bool phases = args.Flag("phases");
        bool checkpointing = args.Flag("activation-checkpointing");
        args.RejectUnknown();

        if (threads > 0) set_num_threads(threads);
        Log($"train bench: shape {shape.Name} ({shape.Config.ParameterCount() / 1e6:F1}M params), batch {shape.Batch}x{shape.SeqLen}, {dtype} on {device}, {get_num_threads()} threads");

        var peakBefore = PeakFlops.Measure(device, dtype, peakSize);
        Log($"matmul peak before: best {peakBefore.BestFlops / 1e9:F1} GFLOP/s, median {peakBefore.MedianFlops / 1e9:F1}");

        using var model = ModelFactory.RandomInit(shape.Config, device, dtype, seed: 1234);
        var options = new TrainStepOptions(Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, GradClip: 1.0, ActivationCheckpointing: checkpointing);
        using var step = new SingleProcessTrainStep(model, options);
        var generator = new Generator(42);
        var batches = Enumerable.Range(0, 4)
            .Select(_ => randint(0, shape.Config.VocabSize, [shape.Batch, shape.SeqLen + 1], dtype: ScalarType.Int64, generator: generator).DetachFromDisposeScope())
            .ToArray();

        var times = new List<double>();
        var cpuTimes = new List<double>();
        var losses = new List<double>();
        var faultCounts = new List<long>();
        long allocatedBefore = 0;
        for (int i = 0; i < warmup + steps; i++)
        {
            if (i == warmup) allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
            double cpu0 = CpuClock.ProcessSeconds();
            long faults0 = CpuClock.MinorFaults();
            var sw = Stopwatch.StartNew();
            var stepResult = step.Step([batches[i % batches.Length]], lr: 3e-4);
            PeakFlops.Sync(device);
            double seconds = sw.Elapsed.TotalSeconds;
            double cpu = CpuClock.ProcessSeconds() - cpu0;
            long faults = CpuClock.MinorFaults() - faults0;
            losses.Add(stepResult.Loss);
            Log($"step {i + 1}/{warmup + steps}{(i < warmup ? " (warm-up)" : "")}: {seconds:F3} s, {shape.Batch * shape.SeqLen / seconds:F1} tok/s, loss {stepResult.Loss:F4}, cpu {cpu:F2} s, {faults} minor page faults");
            if (i >= warmup) { times.Add(seconds); cpuTimes.Add(cpu); faultCounts.Add(faults); }
        }
        long allocatedPerStep = (GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore) / Math.Max(1, steps);

        Dictionary<string, object>? phaseTimes = phases ? PhaseProfile.Run(model, step, batches, device, options, steps) : null;

        var peakAfter = PeakFlops.Measure(device, dtype, peakSize);
        Log($"matmul peak after: best {peakAfter.BestFlops / 1e9:F1} GFLOP/s, median {peakAfter.MedianFlops / 1e9:F1}");
        foreach (var b in batches) b.Dispose();

        double median = Median(times);
        double tokensPerSecond = shape.Batch * shape.SeqLen / median;
        double achieved = tokensPerSecond * shape.TrainFlopsPerToken;
        double peak = Math.Max(peakBefore.BestFlops, peakAfter.BestFlops);
        var result = new Dictionary<string, object>
        {
            ["impl"] = "mellama",
            ["framework"] = $"TorchSharp {typeof(torch).Assembly.GetName().Version} (libtorch {__version__})",
            ["device"] = device.ToString(),
            ["dtype"] = dtype == ScalarType.Float32 ? "fp32" : "bf16",
            ["threads"] = get_num_threads(),
            ["shape"] = shape.Describe(),
            ["activation_checkpointing"] = checkpointing,
            ["warmup_steps"] = warmup,
            ["step_seconds"] = times,
            ["step_cpu_seconds"] = cpuTimes,
            ["median_step_seconds"] = median,
            ["median_step_cpu_seconds"] = Median(cpuTimes),
            ["tokens_per_second"] = tokensPerSecond,
            ["achieved_gflops"] = achieved / 1e9,
            ["peak_before"] = peakBefore.Describe(),
            ["peak_after"] = peakAfter.Describe(),
            ["peak_gflops"] = peak / 1e9,
            ["mfu"] = achieved / peak,
            // Load-robust variant: work per CPU-second of the step over matmul FLOPs per CPU-second (exact with 1 thread;
            // with several, spin-waiting threads count as busy, so it understates).
            ["mfu_cpu_time"] = shape.Batch * shape.SeqLen / Median(cpuTimes) * shape.TrainFlopsPerToken
                               / Math.Max(peakBefore.BestFlopsPerCpuSecond, peakAfter.BestFlopsPerCpuSecond),
            ["losses"] = losses,
            ["managed_bytes_allocated_per_step"] = allocatedPerStep,
            ["minor_page_faults_per_step"] = faultCounts,
            ["env"] = new[] { "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "THP_MEM_ALLOC_ENABLE", "MKL_NUM_THREADS" }
                .Where(v => Environment.GetEnvironmentVariable(v) != null).ToDictionary(v => v, v => Environment.GetEnvironmentVariable(v)!),
        };
        if (phaseTimes != null) result["phases"] = phaseTimes;
        return result;
    }

    public static double Median(IReadOnlyList<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length == 0 ? double.NaN : sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : 0.5 * (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]);
    }

    public static void Log(string message) => Console.Error.WriteLine($"[mellama-bench] {message}");
}
