using System.Diagnostics;
using System.Text.Json;
using MeLlama.Tokenization;
using Microsoft.ML.Tokenizers;

// Tokens per second of MeLlama's LLaMA SentencePiece encoder on the PubMedQA abstracts (each record's
// CONTEXTS joined by a space), on one thread and on all cores, next to Microsoft.ML.Tokenizers'
// LlamaTokenizer.EncodeToIds and the built-in gpt2 tokenizer.

string repo = FindRepoRoot();
string shared = Environment.GetEnvironmentVariable("MELLAMA_SHARED") ?? Path.Combine(repo, "..", "shared");
string tokenizerPath = Arg("--tokenizer") ?? Path.Combine(shared, "data/tokenizer/llama2/tokenizer.model");
string corpusPath = Arg("--corpus") ?? Path.Combine(shared, "data/corpus/pubmedqa/ori_pqal.json");
double seconds = double.Parse(Arg("--seconds") ?? "3", System.Globalization.CultureInfo.InvariantCulture);
bool skipLibrary = args.Contains("--no-library");

var texts = LoadAbstracts(corpusPath);
var loadWatch = Stopwatch.StartNew();
var ours = LlamaSentencePieceTokenizer.FromFile(tokenizerPath);
Console.WriteLine($"load tokenizer.model (our reader + pair table + library decoder): {loadWatch.ElapsedMilliseconds} ms");
loadWatch.Restart();
_ = new MeLlama.Tokenization.SentencePiece.SentencePieceBpeEncoder(MeLlama.Tokenization.SentencePiece.SentencePieceModelFile.Read(tokenizerPath));
Console.WriteLine($"second load of the encoder alone: {loadWatch.ElapsedMilliseconds} ms");
LlamaTokenizer library;
using (var stream = File.OpenRead(tokenizerPath)) library = LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
var gpt2 = TokenizerLoader.Load("gpt2");
var uncached = new MeLlama.Tokenization.SentencePiece.SentencePieceBpeEncoder(
    MeLlama.Tokenization.SentencePiece.SentencePieceModelFile.Read(tokenizerPath), segmentCacheCapacity: 0);

long chars = texts.Sum(t => (long)t.Length);
long tokensPerPass = texts.Sum(t => (long)ours.Encode(t).Length);
int libraryDiffers = texts.Count(t => !library.EncodeToIds(t).SequenceEqual(ours.Encode(t)));
Console.WriteLine($"corpus: {texts.Count} abstracts, {chars:N0} chars, {tokensPerPass:N0} llama tokens per pass; cores: {Environment.ProcessorCount}");
Console.WriteLine($"abstracts where Microsoft.ML.Tokenizers' ids differ from ours: {libraryDiffers}");

Report("mellama llama encoder, 1 thread", Measure(t => ours.Encode(t).Length, 1));
Report($"mellama llama encoder, {Environment.ProcessorCount} threads", Measure(t => ours.Encode(t).Length, Environment.ProcessorCount));
Report("mellama llama encoder without segment cache, 1 thread", Measure(t => uncached.Encode(t).Length, 1));
if (!skipLibrary)
{
    Report("Microsoft.ML.Tokenizers LlamaTokenizer.EncodeToIds, 1 thread", Measure(t => library.EncodeToIds(t).Count, 1));
    Report($"Microsoft.ML.Tokenizers LlamaTokenizer.EncodeToIds, {Environment.ProcessorCount} threads", Measure(t => library.EncodeToIds(t).Count, Environment.ProcessorCount));
}
Report("built-in gpt2 (tiktoken), 1 thread", Measure(t => gpt2.Encode(t).Length, 1));
return 0;

(long Tokens, double Seconds, double CpuSeconds, long AllocatedBytes) Measure(Func<string, int> encode, int threads)
{
    // Warm-up pass (JIT tiers, per-thread buffers), then whole passes over the corpus until the time is up.
    Parallel.For(0, texts.Count, new ParallelOptions { MaxDegreeOfParallelism = threads }, i => encode(texts[i]));
    long tokens = 0;
    long allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
    var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
    var watch = Stopwatch.StartNew();
    do
    {
        if (threads == 1)
        {
            foreach (var t in texts) tokens += encode(t);
        }
        else
        {
            long pass = 0;
            Parallel.For(0, texts.Count, new ParallelOptions { MaxDegreeOfParallelism = threads }, () => 0L,
                (i, _, local) => local + encode(texts[i]), local => Interlocked.Add(ref pass, local));
            tokens += pass;
        }
    } while (watch.Elapsed.TotalSeconds < seconds);
    double wall = watch.Elapsed.TotalSeconds;
    double cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpuBefore).TotalSeconds;
    return (tokens, wall, cpu, GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore);
}

// Wall-clock rate, and the rate per CPU-second the process used (what one core delivers; less sensitive to
// other processes sharing the machine than the wall clock).
void Report(string what, (long Tokens, double Seconds, double CpuSeconds, long AllocatedBytes) m) =>
    Console.WriteLine($"{what,-62} {m.Tokens / m.Seconds / 1e6,6:F3} M tok/s wall  {m.Tokens / m.CpuSeconds / 1e6,6:F3} M tok/CPU-s  {m.AllocatedBytes / (double)m.Tokens,5:F1} B alloc/tok");

List<string> LoadAbstracts(string path)
{
    using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
    return doc.RootElement.EnumerateObject()
        .Select(r => string.Join(" ", r.Value.GetProperty("CONTEXTS").EnumerateArray().Select(c => c.GetString())))
        .ToList();
}

string? Arg(string name)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

static string FindRepoRoot()
{
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        if (File.Exists(Path.Combine(dir.FullName, "MeLlama.sln"))) return dir.FullName;
    return Directory.GetCurrentDirectory();
}
