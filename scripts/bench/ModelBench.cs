// Model and checkpoint I/O measurements (not a test: numbers depend on the machine).
// Run from the repository root:  dotnet run scripts/bench/ModelBench.cs -c Release [-- --big]
#:project ../../src/MeLlama.Model/MeLlama.Model.csproj
#:property UseTorch=true
#:property PublishAot=false

using System.Diagnostics;
using MeLlama.Model;
using TorchSharp;
using static TorchSharp.torch;

bool big = args.Contains("--big");
Console.WriteLine($"torch threads {get_num_threads()}, cores {Environment.ProcessorCount}, load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
// Calibration: a shared machine's speed varies; compare the numbers below against this.
using (no_grad())
{
    using var a = randn(1024, 1024);
    a.matmul(a).Dispose();
    var clock = Stopwatch.StartNew();
    for (int i = 0; i < 10; i++) a.matmul(a).Dispose();
    Console.WriteLine($"calibration: 1024×1024 fp32 matmul {10 * 2.0 * 1024 * 1024 * 1024 / clock.Elapsed.TotalSeconds / 1e9:F0} GFLOP/s");
}

// 1. Forward / decode throughput on the Demo shape.
foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
{
    using var model = new LlamaForCausalLM(LlamaConfig.Demo, dtype: dtype, seed: 1);
    model.eval();
    using var noGrad = no_grad();
    using var ids = randint(0, LlamaConfig.Demo.VocabSize, [4, 256], ScalarType.Int64);
    model.forward(ids).Dispose();   // warm-up
    var watch = Stopwatch.StartNew();
    const int reps = 3;
    for (int i = 0; i < reps; i++) model.forward(ids).Dispose();
    double prefill = reps * ids.numel() / watch.Elapsed.TotalSeconds;

    using var cache = KvCache.For(model, batchSize: 1, capacity: 320);
    using var prompt = ids.narrow(0, 0, 1).narrow(1, 0, 64);
    model.Forward(prompt, cache).Dispose();
    using var next = tensor(new long[] { 5 }).view(1, 1);
    watch.Restart();
    const int steps = 128;
    for (int i = 0; i < steps; i++) model.Forward(next, cache).Dispose();
    double decode = steps / watch.Elapsed.TotalSeconds;
    Console.WriteLine($"Demo ({LlamaConfig.Demo.ParameterCount() / 1e6:F1}M params) {dtype}: forward B=4 T=256 {prefill:F0} tokens/s; KV-cache decode B=1 {decode:F1} tokens/s");
}

// 2. Checkpoint save/load rate and memory: one 7B-shaped layer + 7B embeddings (bf16: ~0.93 GB) unless --big (two layers, fp32).
var shape = LlamaConfig.Llama2_7B with { NumLayers = big ? 2 : 1 };
var saveType = big ? ScalarType.Float32 : ScalarType.BFloat16;
string dir = Path.Combine(Path.GetTempPath(), $"mellama-bench-{Environment.ProcessId}");
try
{
    long bytes = shape.ParameterCount() * (saveType == ScalarType.Float32 ? 4 : 2);
    using (var model = new LlamaForCausalLM(shape, dtype: saveType, seed: 2))
    {
        var watch = Stopwatch.StartNew();
        HfCheckpoint.Save(model, Path.Combine(dir, "hf"), saveType, maxShardBytes: 400L << 20);
        Console.WriteLine($"save {shape.ParameterCount() / 1e6:F0}M params as {saveType}: {bytes / 1e9:F2} GB in {watch.Elapsed.TotalSeconds:F1}s = {bytes / 1e6 / watch.Elapsed.TotalSeconds:F0} MB/s (fsync included)");
    }
    GC.Collect();
    foreach (var loadType in new[] { saveType, ScalarType.Float32 }.Distinct())
    {
        long rssBefore = Rss();
        var watch = Stopwatch.StartNew();
        using var loaded = HfCheckpoint.LoadModel(Path.Combine(dir, "hf"), CPU, loadType);
        double seconds = watch.Elapsed.TotalSeconds;
        long modelBytes = shape.ParameterCount() * (loadType == ScalarType.Float32 ? 4 : 2);
        Console.WriteLine($"load {saveType} file → {loadType} model: {seconds:F1}s = {bytes / 1e6 / seconds:F0} MB/s read; RSS grew {(Rss() - rssBefore) / 1e9:F2} GB for a {modelBytes / 1e9:F2} GB model");
    }
}
finally
{
    if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
}

static long Rss()
{
    foreach (var line in File.ReadLines("/proc/self/status"))
        if (line.StartsWith("VmRSS:")) return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
    return 0;
}
