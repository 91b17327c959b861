using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using System.Collections.Concurrent;
using MeLlama.Core.IO;
using MeLlama.Data.Cleaning;
using MeLlama.Data.Config;
using MeLlama.Data.Datasets;
using MeLlama.Data.Readers;
using MeLlama.Data.Shards;
using MeLlama.Tokenization;

namespace MeLlama.Data.Prepare;

public sealed record PrepareOptions(string OutputDirectory, int Threads)
{
    /// <summary>Called about every <see cref="ProgressInterval"/> from a timer thread.</summary>
    public Action<PrepareProgress>? Progress { get; init; }
    public TimeSpan ProgressInterval { get; init; } = TimeSpan.FromSeconds(1);
    public Serilog.ILogger? Log { get; init; }
}

/// <summary>A snapshot of a running preparation (counts only, never text).</summary>
public sealed record PrepareProgress(long Records, long Documents, long Tokens, long TextBytes, long RawBytes, int Chunks, TimeSpan Elapsed, bool Finished);

public sealed record PrepareResult(string OutputDirectory, IReadOnlyList<DatasetManifest> Datasets, int ChunksReused, int Chunks, TimeSpan Elapsed, long TextBytesProcessed, long TokensProcessed);

/// <summary>Refusal to write into an output folder (another preparation's state, changed inputs).</summary>
public sealed class PrepareOutputException(string message) : Exception(message);

/// <summary>
/// `mellama prepare`: streams every source through clean-up, de-duplication and tokenization into per-domain
/// Megatron shards and manifests.
/// <para>
/// Pipeline: one reader thread (<see cref="CorpusScanner"/>) cuts records into batches; batches are processed on
/// <see cref="PrepareOptions.Threads"/> workers (a limited-concurrency scheduler); their tasks pass through a
/// bounded channel in input order, so the single writer sees results in input order whatever the thread count
/// (output bytes are identical for 1 or N threads) and memory stays bounded (≈ 2 × threads batches in flight).
/// </para>
/// <para>
/// Restart: input is cut into chunks — a chunk ends after the document that brings the open shards to the shard
/// cap — and at each chunk end every open shard is completed and a chunk record is written. A rerun verifies the
/// recorded shards (size + sha256), keeps the longest valid prefix of chunks and continues from its input position.
/// </para>
/// </summary>
public static class PrepareRunner
{
    /// <summary>Bumped when a change would alter output bytes for the same config (invalidates partial runs).</summary>
    public const string PipelineVersion = "prepare-v1";
    const string StateDir = ".prepare";
    const int BatchRecords = 256;
    const int BatchTextChars = 4 << 20;

    public static PrepareResult Run(DataConfig config, ITextTokenizer tokenizer, PrepareOptions options, CancellationToken cancel = default)
    {
        var log = options.Log ?? Serilog.Core.Logger.None;
        int threads = options.Threads > 0 ? options.Threads : Environment.ProcessorCount;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var cleaner = new TextCleaner(config.Normalization);
        string outDir = Path.GetFullPath(options.OutputDirectory);
        bool anyRestricted = config.Sources.Any(s => s.IsRestricted);
        var fileMode = RestrictedPaths.FileMode(anyRestricted);

        // Inputs, checked before any work so a missing file fails in seconds, not hours in.
        var files = new List<IReadOnlyList<string>>();
        var unmatched = new List<List<string>>();
        foreach (var source in config.Sources)
        {
            var (list, missing) = InputFiles.Expand(source.Paths, source.Exclude, config.BaseDirectory);
            if (source.FailOnError)
            {
                foreach (var m in missing) throw new PrepareInputException(source.Name, m, 0, Problems.NoInputFiles, "path or pattern matches no file");
                foreach (var f in list)
                {
                    try { using var _ = File.OpenHandle(f); }
                    catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new PrepareInputException(source.Name, f, 0, Problems.UnreadableFile, e.GetType().Name); }
                }
            }
            foreach (var m in missing) log.Warning("Source {Source}: {Pattern} matches no file (skipped)", source.Name, m);
            files.Add(list);
            unmatched.Add(missing);
        }

        string fingerprint = Fingerprint(config, tokenizer, cleaner);
        var domains = config.Sources.Select(s => s.Domain).Distinct().ToList();
        var domainRestricted = domains.ToDictionary(d => d, d => config.Sources.Where(s => s.Domain == d).Any(s => s.IsRestricted));
        RestrictedPaths.CreateDirectory(outDir, restricted: false);
        string stateDir = Path.Combine(outDir, StateDir);
        RestrictedPaths.CreateDirectory(stateDir, anyRestricted);
        foreach (var d in domains) RestrictedPaths.CreateDirectory(Path.Combine(outDir, d), domainRestricted[d]);

        var chunks = Resume(outDir, stateDir, fingerprint, files, domains, log);
        foreach (var d in domains) File.Delete(Path.Combine(outDir, d, DatasetManifest.FileName)); // rewritten at the end
        if (chunks.Count == 0)
            AtomicFile.WriteAllText(Path.Combine(stateDir, "settings.json"),
                JsonSerializer.Serialize(new PrepareSettings { Fingerprint = fingerprint, Files = files }, DatasetManifest.Json), fileMode);
        int reused = chunks.Count;
        if (reused > 0) log.Information("Resuming after {Chunks} verified chunk(s)", reused);

        var writer = new ChunkWriter(config, outDir, stateDir, tokenizer, domainRestricted, fileMode, chunks);
        writer.SetFiles(files);
        if (chunks.Count == 0)
            for (int s = 0; s < config.Sources.Count; s++)
                foreach (var m in unmatched[s]) { writer.Stats[s].Report(m, 0, Problems.NoInputFiles); writer.Stats[s].Drop("file:" + Problems.NoInputFiles); }

        var scanner = new CorpusScanner(config, files);
        using var progressTimer = options.Progress is { } report
            ? new Timer(_ => report(writer.Snapshot(scanner.RawBytesRead, clock.Elapsed, false)), null, options.ProgressInterval, options.ProgressInterval)
            : null;

        if (!(chunks.Count > 0 && chunks[^1].Final))
            RunPipeline(config, tokenizer, cleaner, threads, scanner, writer, cancel);
        progressTimer?.Dispose();

        var manifests = writer.WriteManifests(cleaner.Description, domains);
        var elapsed = clock.Elapsed;
        options.Progress?.Invoke(writer.Snapshot(scanner.RawBytesRead, elapsed, true));
        return new PrepareResult(outDir, manifests, reused, writer.Chunks.Count, elapsed, writer.TextBytesThisRun, writer.TokensThisRun);
    }

    static void RunPipeline(DataConfig config, ITextTokenizer tokenizer, TextCleaner cleaner, int threads, CorpusScanner scanner, ChunkWriter writer, CancellationToken cancel)
    {
        var processor = new DocumentProcessor(config, cleaner, tokenizer);
        // Dedicated threads, not the thread pool: the writer and reader block, and pool starvation on a
        // 2-core machine would otherwise leave the workers waiting for threads to be injected.
        using var work = new BlockingCollection<(List<CorpusItem> Items, TaskCompletionSource<ProcessedRecord[]> Done)>(threads * 2);
        using var inOrder = new BlockingCollection<Task<ProcessedRecord[]>>(threads * 2);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        Exception? readerError = null;

        var workers = Enumerable.Range(0, threads).Select(i => new Thread(() =>
        {
            try
            {
                foreach (var (items, done) in work.GetConsumingEnumerable(stop.Token))
                {
                    try
                    {
                        var result = new ProcessedRecord[items.Count];
                        for (int k = 0; k < items.Count; k++) result[k] = processor.Process(items[k]);
                        done.SetResult(result);
                    }
                    catch (Exception e) { done.SetException(e); }
                }
            }
            catch (OperationCanceledException) { }
        }) { Name = $"prepare-worker-{i}", IsBackground = true }).ToList();

        var readerThread = new Thread(() =>
        {
            try
            {
                var batch = new List<CorpusItem>(BatchRecords);
                long chars = 0;
                foreach (var item in scanner.Scan(writer.Position, stop.Token))
                {
                    batch.Add(item);
                    chars += item.Text?.Length ?? 0;
                    if (batch.Count >= BatchRecords || chars >= BatchTextChars)
                    {
                        Submit(batch);
                        batch = new List<CorpusItem>(BatchRecords);
                        chars = 0;
                    }
                }
                if (batch.Count > 0) Submit(batch);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested) { }
            catch (Exception e) { readerError = e; }
            finally { inOrder.CompleteAdding(); }
        }) { Name = "prepare-reader", IsBackground = true };

        void Submit(List<CorpusItem> batch)
        {
            var done = new TaskCompletionSource<ProcessedRecord[]>(TaskCreationOptions.RunContinuationsAsynchronously);
            inOrder.Add(done.Task, stop.Token); // bounded: the reader waits while the writer is behind
            work.Add((batch, done), stop.Token);
        }

        foreach (var t in workers) t.Start();
        readerThread.Start();
        try
        {
            foreach (var task in inOrder.GetConsumingEnumerable(cancel))
                foreach (var record in task.GetAwaiter().GetResult())
                    writer.Write(record);
            if (readerError != null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(readerError).Throw();
            cancel.ThrowIfCancellationRequested();
            writer.CloseChunk(final: true);
        }
        catch
        {
            writer.Abandon();
            throw;
        }
        finally
        {
            stop.Cancel();
            readerThread.Join();
            foreach (var t in workers) t.Join();
        }
    }

    static string Fingerprint(DataConfig config, ITextTokenizer tokenizer, TextCleaner cleaner)
    {
        string text = string.Join("\n", PipelineVersion, config.ToJson(), config.BaseDirectory, tokenizer.Name, tokenizer.Fingerprint, tokenizer.VocabSize.ToString(System.Globalization.CultureInfo.InvariantCulture), cleaner.Description);
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
    }

    static readonly Regex ShardName = new(@"^(train|eval)-(\d{5,})\.(bin|idx)$", RegexOptions.CultureInvariant);
    static readonly Regex ChunkName = new(@"^(chunk|dedup)-(\d{5,})\.(json|bin)$", RegexOptions.CultureInvariant);

    /// <summary>Loads and verifies earlier chunks; removes everything after the longest valid prefix.</summary>
    static List<ChunkRecord> Resume(string outDir, string stateDir, string fingerprint, IReadOnlyList<IReadOnlyList<string>> files, IReadOnlyList<string> domains, Serilog.ILogger log)
    {
        var valid = new List<ChunkRecord>();
        string settingsPath = Path.Combine(stateDir, "settings.json");
        if (File.Exists(settingsPath))
        {
            var settings = JsonSerializer.Deserialize<PrepareSettings>(File.ReadAllText(settingsPath), DatasetManifest.Json);
            if (settings?.Fingerprint != fingerprint)
                throw new PrepareOutputException($"'{outDir}' holds a preparation made with other settings (config, tokenizer or version); use another --out or delete it");
            if (!settings.Files.Select(l => string.Join("\n", l)).SequenceEqual(files.Select(l => string.Join("\n", l))))
                throw new PrepareOutputException($"the input file list differs from the partial preparation in '{outDir}'; use another --out or delete it");
            for (int i = 0; ; i++)
            {
                string path = Path.Combine(stateDir, $"chunk-{i:D5}.json");
                if (!File.Exists(path)) break;
                ChunkRecord? chunk;
                try { chunk = JsonSerializer.Deserialize<ChunkRecord>(File.ReadAllText(path), ChunkRecord.Json); }
                catch (JsonException) { chunk = null; }
                string? why = chunk is null ? "unreadable chunk record" : Invalid(outDir, stateDir, chunk);
                if (why != null) { log.Warning("Chunk {Chunk} is not intact ({Why}); redoing it and what follows", i, why); break; }
                valid.Add(chunk!);
                if (chunk!.Final) break;
            }
            foreach (var outcome in valid.SelectMany(c => c.FilesCompleted))
            {
                var info = new FileInfo(outcome.Path);
                if (outcome.Sha256 != null && (!info.Exists || info.Length != outcome.Bytes || info.LastWriteTimeUtc.Ticks != outcome.LastWriteTicks))
                    throw new PrepareOutputException($"input '{outcome.Path}' changed since the partial preparation in '{outDir}'; use another --out or delete it");
            }
        }
        else if (Directory.EnumerateFileSystemEntries(stateDir).Any())
            throw new PrepareOutputException($"'{stateDir}' has no settings.json; delete the folder to start over");

        // Remove what the valid prefix does not account for: later chunks, their shards, temporary files.
        int keep = valid.Count;
        foreach (var f in Directory.EnumerateFiles(stateDir))
        {
            var m = ChunkName.Match(Path.GetFileName(f));
            if ((m.Success && int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture) >= keep) || Path.GetFileName(f).StartsWith('.'))
                File.Delete(f);
        }
        foreach (var d in domains)
        {
            string dir = Path.Combine(outDir, d);
            if (!Directory.Exists(dir)) continue;
            foreach (var f in Directory.EnumerateFiles(dir))
            {
                string name = Path.GetFileName(f);
                var m = ShardName.Match(name);
                if ((m.Success && int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture) >= keep) || name.StartsWith('.'))
                    File.Delete(f);
            }
        }
        return valid;
    }

    static string? Invalid(string outDir, string stateDir, ChunkRecord chunk)
    {
        foreach (var s in chunk.Shards)
        {
            foreach (var (name, bytes, sha) in new[] { (s.Shard.Bin, s.Shard.BinBytes, s.Shard.BinSha256), (s.Shard.Idx, s.Shard.IdxBytes, s.Shard.IdxSha256) })
            {
                string path = Path.Combine(outDir, s.Domain, name);
                if (!File.Exists(path)) return $"{s.Domain}/{name} is missing";
                if (new FileInfo(path).Length != bytes) return $"{s.Domain}/{name} has the wrong size";
                if (AtomicFile.Sha256File(path) != sha) return $"{s.Domain}/{name} fails its sha256";
            }
        }
        string dedup = Path.Combine(stateDir, chunk.DedupFile);
        if (!File.Exists(dedup) || new FileInfo(dedup).Length != chunk.DedupBytes || AtomicFile.Sha256File(dedup) != chunk.DedupSha256)
            return $"{chunk.DedupFile} is missing or damaged";
        return null;
    }
}
