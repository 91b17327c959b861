using System.Diagnostics;
using System.Globalization;
using Serilog;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Distributed.Diagnostics;

/// <summary>What <see cref="CollectivesSelfTest"/> runs.</summary>
public sealed record SelfTestOptions
{
    /// <summary>Buffer sizes in bytes (the all-reduce buffer; the full input/output for reduce-scatter/all-gather).</summary>
    public IReadOnlyList<long> SizesBytes { get; init; } = [4 << 10, 1 << 20, 16 << 20];
    public IReadOnlyList<ScalarType> DTypes { get; init; } = [ScalarType.Float32, ScalarType.BFloat16];

    /// <summary>Timed repetitions of each case (after <see cref="Warmup"/> untimed ones).</summary>
    public int Iterations { get; init; } = 5;
    public int Warmup { get; init; } = 1;

    /// <summary>Repeat the whole suite this many times (0 = until stopped): a soak test.</summary>
    public int Loops { get; init; } = 1;

    public Device Device { get; init; } = CPU;

    /// <summary>Which collectives to run: all_reduce, reduce_scatter, all_gather, broadcast.</summary>
    public IReadOnlySet<string> Ops { get; init; } = new HashSet<string>(AllOps);

    public static readonly string[] AllOps = ["all_reduce", "reduce_scatter", "all_gather", "broadcast"];
}

/// <summary>
/// A cluster health check like nccl-tests: every collective on known data, checked exactly against what
/// the other ranks must have contributed, with timings. Rank 0 prints one line per case:
/// operation, dtype, bytes, status, mean time, algorithm bandwidth (bytes/time) and bus bandwidth
/// (algbw × 2(n−1)/n for all-reduce, × (n−1)/n for reduce-scatter and all-gather: comparable across world
/// sizes, the figure nccl-tests reports) and rank 0's process CPU time per call (on a busy machine the CPU
/// cost says more about efficiency than the wall time). Returns 0 when every check passed.
/// </summary>
public static class CollectivesSelfTest
{
    public const int StoppedExitCode = 75;

    public static int Run(ICollectives comm, SelfTestOptions options, TextWriter output, ILogger log, Func<bool> stopRequested)
    {
        int failures = 0;
        if (comm.Rank == 0)
            output.WriteLine($"# collectives self-test: backend {comm.Backend}, world size {comm.WorldSize}, device {options.Device}");
        for (int loop = 1; options.Loops == 0 || loop <= options.Loops; loop++)
        {
            foreach (var dtype in options.DTypes)
                foreach (long size in options.SizesBytes)
                    failures += RunCases(comm, options, dtype, size, output, log);
            comm.Barrier();
            if (options.Loops != 1) output.WriteLine($"rank {comm.Rank}: loop {loop} {(failures == 0 ? "ok" : "FAILED")}");
            if (AgreeToStop(comm, options.Device, stopRequested()))
            {
                log.Warning("Stopping after loop {Loop} on request (signal)", loop);
                return StoppedExitCode;
            }
        }
        if (comm.Rank == 0) output.WriteLine(failures == 0 ? "# all checks passed" : $"# {failures} check(s) FAILED");
        return failures == 0 ? 0 : 1;
    }

    /// <summary>Every rank must stop after the same loop, or the others would wait in a collective for it.</summary>
    static bool AgreeToStop(ICollectives comm, Device device, bool local)
    {
        using var scope = NewDisposeScope();
        var flag = tensor(new[] { local ? 1f : 0f }, device: device);
        comm.AllReduce(flag, ReduceOp.Max);
        return flag.cpu().item<float>() > 0;
    }

    static int RunCases(ICollectives comm, SelfTestOptions o, ScalarType dtype, long sizeBytes, TextWriter output, ILogger log)
    {
        using var scope = NewDisposeScope();
        int w = comm.WorldSize, r = comm.Rank;
        long e = ElementSize(dtype);
        long n = Math.Max(1, sizeBytes / e);
        long perRank = Math.Max(1, n / w);
        int failures = 0;

        var source = Data(r, n, dtype, o.Device);
        var buffer = empty_like(source);
        if (o.Ops.Contains("all_reduce"))
        {
            var sum = Expected(w, n, dtype, o.Device, max: false);
            failures += Case(comm, o, output, log, "all_reduce sum", dtype, n * e, BusFactor(w, allReduce: true),
                prepare: () => buffer.copy_(source), op: () => comm.AllReduce(buffer, ReduceOp.Sum), check: () => Same(buffer, sum));
            var max = Expected(w, n, dtype, o.Device, max: true);
            failures += Case(comm, o, output, log, "all_reduce max", dtype, n * e, BusFactor(w, allReduce: true),
                prepare: () => buffer.copy_(source), op: () => comm.AllReduce(buffer, ReduceOp.Max), check: () => Same(buffer, max));
        }
        if (o.Ops.Contains("reduce_scatter"))
        {
            var rsInput = Data(r, perRank * w, dtype, o.Device);
            var rsOutput = empty(perRank, dtype: dtype, device: o.Device);
            var rsExpected = Expected(w, perRank * w, dtype, o.Device, max: false).narrow(0, r * perRank, perRank);
            failures += Case(comm, o, output, log, "reduce_scatter sum", dtype, perRank * w * e, BusFactor(w, allReduce: false),
                prepare: () => { }, op: () => comm.ReduceScatter(rsInput, rsOutput, ReduceOp.Sum), check: () => Same(rsOutput, rsExpected));
        }
        if (o.Ops.Contains("all_gather"))
        {
            var agInput = Data(r, perRank, dtype, o.Device);
            var agOutput = empty(perRank * w, dtype: dtype, device: o.Device);
            var agExpected = cat(Enumerable.Range(0, w).Select(q => Data(q, perRank, dtype, o.Device)).ToArray());
            failures += Case(comm, o, output, log, "all_gather", dtype, perRank * w * e, BusFactor(w, allReduce: false),
                prepare: () => { }, op: () => comm.AllGather(agInput, agOutput), check: () => Same(agOutput, agExpected));
        }
        if (o.Ops.Contains("broadcast"))
        {
            int root = w - 1;
            var bcExpected = Data(root, n, dtype, o.Device);
            failures += Case(comm, o, output, log, $"broadcast root {root}", dtype, n * e, 1.0,
                prepare: () => buffer.copy_(source), op: () => comm.Broadcast(buffer, root), check: () => Same(buffer, bcExpected));
        }
        return failures;
    }

    static int Case(ICollectives comm, SelfTestOptions o, TextWriter output, ILogger log, string name, ScalarType dtype, long bytes, double busFactor,
        Action prepare, Action op, Func<bool> check)
    {
        for (int i = 0; i < o.Warmup; i++) { prepare(); op(); }
        double seconds = 0;
        bool ok = true;
        int iterations = Math.Max(1, o.Iterations);
        double cpuSeconds = 0;
        using var self = Process.GetCurrentProcess();
        for (int i = 0; i < iterations; i++)
        {
            prepare();
            if (o.Device.type == DeviceType.CUDA) cuda.synchronize(o.Device);
            self.Refresh();
            var cpuBefore = self.TotalProcessorTime;
            var clock = Stopwatch.StartNew();
            op();
            seconds += clock.Elapsed.TotalSeconds;
            self.Refresh();
            cpuSeconds += (self.TotalProcessorTime - cpuBefore).TotalSeconds;
            if (i == 0 || i == iterations - 1) ok &= check();
        }
        double mean = seconds / iterations;
        double algbw = bytes / mean / 1e9;
        if (!ok) log.Error("{Case} {DType} {Bytes} B: WRONG RESULT on rank {Rank}", name, dtype, bytes, comm.Rank);
        if (comm.Rank == 0 || !ok)
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{name,-20} {DTypeName(dtype),-9} {bytes,12} B  {(ok ? "ok" : "WRONG"),-5} {mean * 1e3,9:0.000} ms  algbw {algbw,7:0.000} GB/s  busbw {algbw * busFactor,7:0.000} GB/s  cpu {cpuSeconds / iterations * 1e3,8:0.00} ms"));
        return ok ? 0 : 1;
    }

    /// <summary>Rank <paramref name="rank"/>'s data: small integers in [-8, 8], exact in every dtype and in sums of up to 32 ranks (bf16).</summary>
    static Tensor Data(int rank, long n, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        return (arange(n, ScalarType.Int64, device) * (rank + 1) + 3 * rank).remainder(17).sub(8).to(dtype).MoveToOuterDisposeScope();
    }

    static Tensor Expected(int world, long n, ScalarType dtype, Device device, bool max)
    {
        using var scope = NewDisposeScope();
        Tensor acc = Data(0, n, ScalarType.Float64, device);
        for (int q = 1; q < world; q++)
            acc = max ? maximum(acc, Data(q, n, ScalarType.Float64, device)) : acc + Data(q, n, ScalarType.Float64, device);
        return acc.to(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>Exact comparison in the tensors' own dtype, without large temporaries (they would distort the timings).</summary>
    static bool Same(Tensor actual, Tensor expected)
    {
        using var scope = NewDisposeScope();
        return actual.eq(expected).all().cpu().item<bool>();
    }

    static double BusFactor(int world, bool allReduce) => world == 1 ? 1 : allReduce ? 2.0 * (world - 1) / world : (world - 1.0) / world;

    public static long ElementSize(ScalarType dtype) => dtype switch
    {
        ScalarType.Float64 or ScalarType.Int64 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.BFloat16 or ScalarType.Float16 => 2,
        _ => 1,
    };

    public static string DTypeName(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => "float32", ScalarType.BFloat16 => "bfloat16", ScalarType.Float16 => "float16",
        ScalarType.Float64 => "float64", ScalarType.Int64 => "int64", ScalarType.Int32 => "int32", _ => dtype.ToString(),
    };

    public static ScalarType ParseDType(string name) => name.Trim().ToLowerInvariant() switch
    {
        "float32" or "fp32" or "float" => ScalarType.Float32,
        "bfloat16" or "bf16" => ScalarType.BFloat16,
        "float16" or "fp16" or "half" => ScalarType.Float16,
        "float64" or "fp64" or "double" => ScalarType.Float64,
        "int64" or "long" => ScalarType.Int64,
        "int32" or "int" => ScalarType.Int32,
        _ => throw new FormatException($"unknown dtype '{name}' (float32, bfloat16, float16, float64, int64, int32)"),
    };

    /// <summary>"4K", "1M", "64MiB", "1G", "512" → bytes.</summary>
    public static long ParseSize(string text)
    {
        var s = text.Trim().ToUpperInvariant().Replace("IB", "").Replace("B", "");
        long unit = s.EndsWith('K') ? 1L << 10 : s.EndsWith('M') ? 1L << 20 : s.EndsWith('G') ? 1L << 30 : 1;
        if (unit != 1) s = s[..^1];
        if (!long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out long v) || v <= 0)
            throw new FormatException($"'{text}' is not a size such as 4K, 1M or 64M");
        return v * unit;
    }
}
