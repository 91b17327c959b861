using MeLlama.Data.Config;
using MeLlama.Data.Prepare;
using MeLlama.Tokenization;

namespace MeLlamaBench;

/// <summary>
/// The whole `mellama prepare` pipeline (read JSON records, clean + NFC, dedup hash, tokenize, write Megatron shards
/// and manifests) over the PubMedQA file, into a fresh folder: end-to-end tokens/s.
/// </summary>
static class PrepareBench
{
    public static Dictionary<string, object> Run(Args args)
    {
        string tokenizerPath = Path.GetFullPath(args.Get("tokenizer") ?? throw new ArgumentException("--tokenizer PATH is required"));
        string corpus = Path.GetFullPath(args.Get("corpus") ?? throw new ArgumentException("--corpus PATH is required"));
        string work = Path.GetFullPath(args.Get("work") ?? throw new ArgumentException("--work DIR is required"));
        int threads = args.Int("threads", Environment.ProcessorCount);
        int repeats = args.Int("repeats", 2);
        args.RejectUnknown();

        var config = new DataConfig
        {
            Name = "bench-pubmedqa", Tokenizer = tokenizerPath, MinChars = 1, EvalFraction = 0, Dedup = true,
            Sources = [new SourceConfig { Name = "pubmedqa", Paths = [corpus], Format = "json-records", Fields = ["CONTEXTS"], Joiner = " ", Domain = "biomedical" }],
        };
        var tokenizer = TokenizerLoader.Load(tokenizerPath);
        var runs = new List<Dictionary<string, object>>();
        for (int i = 0; i < repeats; i++)
        {
            string outDir = Path.Combine(work, $"prepare-{i}");
            if (Directory.Exists(outDir)) Directory.Delete(outDir, recursive: true);
            var result = PrepareRunner.Run(config, tokenizer, new PrepareOptions(outDir, threads));
            double seconds = result.Elapsed.TotalSeconds;
            TrainBench.Log($"prepare run {i + 1}: {result.TokensProcessed} tokens in {seconds:F2} s = {result.TokensProcessed / seconds / 1e6:F3} M tok/s");
            runs.Add(new() { ["seconds"] = seconds, ["tokens"] = result.TokensProcessed, ["text_bytes"] = result.TextBytesProcessed });
            Directory.Delete(outDir, recursive: true);
        }
        var best = runs.MaxBy(r => (long)r["tokens"] / (double)r["seconds"])!;
        return new Dictionary<string, object>
        {
            ["impl"] = "mellama prepare (PrepareRunner)",
            ["threads"] = threads,
            ["runs"] = runs,
            ["tokens_per_second"] = (long)best["tokens"] / (double)best["seconds"],
            ["note"] = "first run includes JIT warm-up; best run reported",
        };
    }
}
