using System.Text.Json;
using MeLlamaBench;

// mellama-bench <train|peak|tokenize|prepare|checkpoint> [--options] [--out FILE]
// Progress goes to stderr; the result (one JSON object) to --out or stdout. Driven by scripts/bench/run.sh.
if (args.Length == 0 || args[0] is "-h" or "--help")
{
    Console.Error.WriteLine("usage: MeLlamaBench <train|peak|tokenize|prepare|checkpoint> [--shape 130m|small|tiny] [--out FILE] ... (see scripts/bench/README.md)");
    return 2;
}
try
{
    var options = new Args(args.Skip(1));
    string? output = options.Get("out");
    var result = args[0] switch
    {
        "train" => TrainBench.Run(options),
        "peak" => Peak(options),
        "tokenize" => TokenizeBench.Run(options),
        "prepare" => PrepareBench.Run(options),
        "checkpoint" => CheckpointBench.Run(options),
        "ops" => OpProfile.Run(options),
        "hf-model" => HfModelFolder.Run(options),
        "io" => IoExperiment.Run(options),
        "hash" => HashBench.Run(options),
        "fsdp" => FsdpScalingBench.Run(options),
        var other => throw new ArgumentException($"unknown command '{other}'"),
    };
    string json = JsonSerializer.Serialize(result, new JsonSerializerOptions { WriteIndented = true });
    if (output is null) Console.WriteLine(json);
    else File.WriteAllText(output, json + "\n");
    return 0;
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"MeLlamaBench: {e.Message}");
    return 2;
}

static Dictionary<string, object> Peak(Args options)
{
    var device = new TorchSharp.torch.Device(options.Get("device", "cpu"));
    var dtype = options.Get("dtype", "fp32") == "bf16" ? TorchSharp.torch.ScalarType.BFloat16 : TorchSharp.torch.ScalarType.Float32;
    int size = options.Int("size", 2048);
    int threads = options.Int("threads", 0);
    options.RejectUnknown();
    if (threads > 0) TorchSharp.torch.set_num_threads(threads);
    return PeakFlops.Measure(device, dtype, size).Describe();
}
