using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using MeLlama.Tokenization;

namespace MeLlamaBench;

/// <summary>
/// Tokens/s of MeLlama's LLaMA tokenizer (<see cref="TokenizerLoader"/>, the one `prepare` uses) on the PubMedQA
/// abstracts: each record's CONTEXTS joined by one space, no BOS/EOS, exactly as spm_tokenize.py feeds
/// SentencePiece. A sha256 over all ids lets run.sh check both did the same work.
/// MeLlama's encoder caches the ids of recent word segments; passing over the same 1000 abstracts again and again
/// would make every later pass a cache hit, so each timed pass uses a freshly loaded tokenizer (load time not
/// counted): the cache only helps within a pass, as it would on one pass over a real corpus.
/// </summary>
static class TokenizeBench
{
    public static Dictionary<string, object> Run(Args args)
    {
        string tokenizerPath = args.Get("tokenizer") ?? throw new ArgumentException("--tokenizer PATH is required");
        string corpus = args.Get("corpus") ?? throw new ArgumentException("--corpus PATH is required");
        double seconds = args.Double("seconds", 3);
        int threads = args.Int("threads", Environment.ProcessorCount);
        args.RejectUnknown();

        var texts = LoadAbstracts(corpus);
        var load = Stopwatch.StartNew();
        var tokenizer = TokenizerLoader.Load(tokenizerPath);
        double loadSeconds = load.Elapsed.TotalSeconds;

        // Ids of one pass (also the warm-up): count and digest.
        var ids = texts.Select(t => tokenizer.Encode(t)).ToArray();
        long tokensPerPass = ids.Sum(x => (long)x.Length);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var row in ids)
            foreach (var id in row) sha.AppendData(BitConverter.GetBytes(id));
        string digest = Convert.ToHexStringLower(sha.GetHashAndReset());

        var one = Measure(texts, () => TokenizerLoader.Load(tokenizerPath), 1, seconds);
        TrainBench.Log($"tokenize 1 thread: {one.Tokens / one.Seconds / 1e6:F3} M tok/s");
        var many = Measure(texts, () => TokenizerLoader.Load(tokenizerPath), threads, seconds);
        TrainBench.Log($"tokenize {threads} threads: {many.Tokens / many.Seconds / 1e6:F3} M tok/s");
        // The BPE merge loop alone, segment cache off.
        var model = MeLlama.Tokenization.SentencePiece.SentencePieceModelFile.Read(tokenizerPath);
        var uncached = new MeLlama.Tokenization.SentencePiece.SentencePieceBpeEncoder(model, segmentCacheCapacity: 0);
        var noCache = Measure(texts, () => new EncoderOnly(uncached), 1, seconds);
        TrainBench.Log($"tokenize 1 thread, no segment cache: {noCache.Tokens / noCache.Seconds / 1e6:F3} M tok/s");
        return new Dictionary<string, object>
        {
            ["impl"] = "mellama",
            ["tokenizer"] = tokenizer.Name,
            ["load_seconds"] = loadSeconds,
            ["documents"] = texts.Count,
            ["chars"] = texts.Sum(t => (long)t.Length),
            ["tokens_per_pass"] = tokensPerPass,
            ["ids_sha256"] = digest,
            ["tokens_per_second_1_thread"] = one.Tokens / one.Seconds,
            ["tokens_per_cpu_second_1_thread"] = one.Tokens / one.CpuSeconds,
            ["threads"] = threads,
            ["tokens_per_second_n_threads"] = many.Tokens / many.Seconds,
            ["tokens_per_second_1_thread_no_segment_cache"] = noCache.Tokens / noCache.Seconds,
        };
    }

    /// <summary>Whole passes, each with a fresh tokenizer from <paramref name="load"/> (untimed), until <paramref name="seconds"/> of encoding.</summary>
    static (long Tokens, double Seconds, double CpuSeconds) Measure(List<string> texts, Func<ITextTokenizer> load, int threads, double seconds)
    {
        var warm = load();
        Parallel.For(0, texts.Count, new ParallelOptions { MaxDegreeOfParallelism = threads }, i => warm.Encode(texts[i]));
        long tokens = 0;
        double wall = 0, cpu = 0;
        var process = Process.GetCurrentProcess();
        do
        {
            var tokenizer = load();
            Func<string, int> encode = t => tokenizer.Encode(t).Length;
            process.Refresh();
            var cpu0 = process.TotalProcessorTime;
            var sw = Stopwatch.StartNew();
            if (threads == 1)
                foreach (var t in texts) tokens += encode(t);
            else
            {
                long pass = 0;
                Parallel.For(0, texts.Count, new ParallelOptions { MaxDegreeOfParallelism = threads }, () => 0L,
                    (i, _, local) => local + encode(texts[i]), local => Interlocked.Add(ref pass, local));
                tokens += pass;
            }
            wall += sw.Elapsed.TotalSeconds;
            process.Refresh();
            cpu += (process.TotalProcessorTime - cpu0).TotalSeconds;
        } while (wall < seconds);
        return (tokens, wall, cpu);
    }

    /// <summary>Just enough of <see cref="ITextTokenizer"/> to time the bare encoder.</summary>
    sealed class EncoderOnly(MeLlama.Tokenization.SentencePiece.SentencePieceBpeEncoder encoder) : ITextTokenizer
    {
        public string Name => "bpe-no-cache";
        public int VocabSize => 0;
        public int BosId => 1;
        public int EosId => 2;
        public string Fingerprint => "";
        public int[] Encode(string text, bool addBos = false, bool addEos = false) => encoder.Encode(text);
        public string Decode(ReadOnlySpan<int> ids) => throw new NotSupportedException();
        public void SaveHfFiles(string dir, string? chatTemplate) => throw new NotSupportedException();
    }

    public static List<string> LoadAbstracts(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        return doc.RootElement.EnumerateObject()
            .Select(r => string.Join(" ", r.Value.GetProperty("CONTEXTS").EnumerateArray().Select(c => c.GetString())))
            .ToList();
    }
}
