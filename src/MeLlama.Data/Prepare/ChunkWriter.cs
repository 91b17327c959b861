using System.Buffers.Binary;
using System.Text.Json;
using MeLlama.Core.IO;
using MeLlama.Data.Config;
using MeLlama.Data.Datasets;
using MeLlama.Data.Readers;
using MeLlama.Data.Shards;
using MeLlama.Tokenization;

namespace MeLlama.Data.Prepare;

/// <summary>
/// The single, in-order consumer of processed records: de-duplicates, routes documents to their domain's train or
/// eval shard, keeps the statistics and closes chunks (shards + dedup hashes + chunk record) at the shard cap.
/// </summary>
sealed class ChunkWriter
{
    readonly DataConfig _config;
    readonly string _outDir, _stateDir;
    readonly ITextTokenizer _tokenizer;
    readonly IReadOnlyDictionary<string, bool> _domainRestricted;
    readonly UnixFileMode? _stateMode;
    readonly TokenDType _dtype;
    readonly long _capBytes;
    readonly HashSet<UInt128> _seen = [];
    readonly List<UInt128> _chunkHashes = [];
    readonly List<FileOutcome> _chunkFiles = [];
    readonly SortedDictionary<(string Domain, string Split), IndexedShardWriter> _open = new();
    readonly List<ChunkRecord> _chunks;
    readonly object _gate = new();
    long _records, _documents, _tokens, _textBytes;

    public SourceStats[] Stats { get; }
    public InputPosition Position { get; private set; }
    public IReadOnlyList<ChunkRecord> Chunks => _chunks;
    public long TextBytesThisRun { get; private set; }
    public long TokensThisRun { get; private set; }

    public ChunkWriter(DataConfig config, string outDir, string stateDir, ITextTokenizer tokenizer,
        IReadOnlyDictionary<string, bool> domainRestricted, UnixFileMode? stateMode, List<ChunkRecord> chunks)
    {
        _config = config;
        _outDir = outDir;
        _stateDir = stateDir;
        _tokenizer = tokenizer;
        _domainRestricted = domainRestricted;
        _stateMode = stateMode;
        _dtype = IndexedFormat.DTypeForVocab(tokenizer.VocabSize);
        _capBytes = Math.Max(1, (long)(config.ShardMegabytes * 1024 * 1024));
        _chunks = chunks;
        if (chunks.Count > 0)
        {
            Stats = [.. chunks[^1].Sources.Select(s => s.Clone())];
            Position = chunks[^1].Position;
            foreach (var c in chunks) LoadHashes(Path.Combine(stateDir, c.DedupFile));
        }
        else
        {
            Stats = [.. config.Sources.Select(s => new SourceStats { Name = s.Name, Domain = s.Domain })];
            Position = InputPosition.Start;
        }
        foreach (var s in Stats)
        {
            _records += s.Records;
            _documents += s.Documents;
            _tokens += s.Tokens;
            _textBytes += s.TextBytes;
        }
    }

    void LoadHashes(string path)
    {
        var bytes = File.ReadAllBytes(path);
        for (int i = 0; i + 16 <= bytes.Length; i += 16) _seen.Add(BinaryPrimitives.ReadUInt128LittleEndian(bytes.AsSpan(i)));
    }

    public void Write(in ProcessedRecord r)
    {
        var item = r.Item;
        var stats = Stats[item.Source];
        var source = _config.Sources[item.Source];
        lock (_gate)
        {
            if (item.FileEnd is { } end)
            {
                _chunkFiles.Add(end);
                if (end.Problem != null)
                {
                    stats.FilesFailed++;
                    stats.Drop("file:" + end.Problem);
                    stats.Report(end.Path, end.Line, end.Detail is null ? end.Problem : $"{end.Problem}: {end.Detail}");
                }
                Position = new InputPosition(item.Source, item.File + 1, 0);
                return;
            }
            Position = new InputPosition(item.Source, item.File, item.Ordinal + 1);
            stats.Records++;
            _records++;
            stats.TextBytes += r.TextBytes;
            _textBytes += r.TextBytes;
            TextBytesThisRun += r.TextBytes;
            if (item.Problem != null)
            {
                stats.Drop(item.Problem);
                stats.Report(FilePath(item), item.Line, item.Problem);
                return;
            }
            if (r.Drop != null) { stats.Drop(r.Drop); return; }
            if (_config.Dedup && !_seen.Add(r.Hash)) { stats.Drop(Problems.Duplicate); return; }
            if (_config.Dedup) _chunkHashes.Add(r.Hash);
            string split = r.Eval ? "eval" : "train";
            var key = (source.Domain, split);
            if (!_open.TryGetValue(key, out var shard))
            {
                shard = new IndexedShardWriter(Path.Combine(_outDir, source.Domain, $"{split}-{_chunks.Count:D5}.bin"), _dtype, _domainRestricted[source.Domain]);
                _open[key] = shard;
            }
            shard.Add(r.Tokens!);
            int n = r.Tokens!.Length;
            if (r.Eval) { stats.EvalDocuments++; stats.EvalTokens += n; }
            else { stats.TrainDocuments++; stats.TrainTokens += n; }
            _documents++;
            _tokens += n;
            TokensThisRun += n;
        }
        if (_open.Values.Sum(w => w.BinBytes) >= _capBytes) CloseChunk(final: false);
    }

    string FilePath(CorpusItem item) => _filePaths?[item.Source][item.File] ?? $"source {item.Source} file {item.File}";
    IReadOnlyList<IReadOnlyList<string>>? _filePaths;
    public void SetFiles(IReadOnlyList<IReadOnlyList<string>> files) => _filePaths = files;

    /// <summary>Completes all open shards and records the chunk (the point a rerun resumes from).</summary>
    public void CloseChunk(bool final)
    {
        lock (_gate)
        {
            int index = _chunks.Count;
            var shards = new List<ChunkShard>();
            foreach (var ((domain, split), w) in _open)
            {
                shards.Add(new ChunkShard(domain, split, w.Complete()));
                w.Dispose();
            }
            _open.Clear();
            string dedupName = $"dedup-{index:D5}.bin";
            var hashBytes = new byte[_chunkHashes.Count * 16];
            for (int i = 0; i < _chunkHashes.Count; i++) BinaryPrimitives.WriteUInt128LittleEndian(hashBytes.AsSpan(i * 16), _chunkHashes[i]);
            AtomicFile.WriteAllBytes(Path.Combine(_stateDir, dedupName), hashBytes, _stateMode);
            var record = new ChunkRecord
            {
                Index = index,
                Position = Position,
                Final = final,
                Shards = shards,
                FilesCompleted = [.. _chunkFiles],
                Sources = [.. Stats.Select(s => s.Clone())],
                DedupFile = dedupName,
                DedupBytes = hashBytes.Length,
                DedupSha256 = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(hashBytes)),
            };
            AtomicFile.WriteAllText(Path.Combine(_stateDir, $"chunk-{index:D5}.json"), JsonSerializer.Serialize(record, ChunkRecord.Json), _stateMode);
            _chunks.Add(record);
            _chunkHashes.Clear();
            _chunkFiles.Clear();
        }
    }

    /// <summary>Drops the unfinished chunk (its temporary shard files are deleted).</summary>
    public void Abandon()
    {
        lock (_gate)
        {
            foreach (var w in _open.Values) w.Dispose();
            _open.Clear();
        }
    }

    public PrepareProgress Snapshot(long rawBytes, TimeSpan elapsed, bool finished)
    {
        lock (_gate) return new PrepareProgress(_records, _documents, _tokens, _textBytes, rawBytes, _chunks.Count, elapsed, finished);
    }

    /// <summary>Writes manifest.json for every domain from the chunk records (always the same bytes for the same chunks).</summary>
    public List<DatasetManifest> WriteManifests(string normalization, IReadOnlyList<string> domains)
    {
        var files = _chunks.SelectMany(c => c.FilesCompleted).ToList();
        var result = new List<DatasetManifest>();
        foreach (var domain in domains)
        {
            var sources = new List<SourceReport>();
            for (int s = 0; s < _config.Sources.Count; s++)
            {
                var src = _config.Sources[s];
                if (src.Domain != domain) continue;
                var st = Stats[s];
                var srcFiles = (_filePaths?[s] ?? []).ToHashSet(StringComparer.Ordinal);
                sources.Add(new SourceReport
                {
                    Name = src.Name,
                    Format = src.Format,
                    Licence = src.Licence,
                    Access = src.Access,
                    Files = [.. files.Where(f => srcFiles.Contains(f.Path)).Select(f => new InputFileReport(f.Path, f.Bytes, f.Sha256, f.Status))],
                    Records = st.Records,
                    Documents = st.Documents,
                    Tokens = st.Tokens,
                    TextBytes = st.TextBytes,
                    Dropped = st.Dropped,
                    Problems = st.Problems,
                });
            }
            var manifest = new DatasetManifest
            {
                Name = $"{_config.Name}/{domain}",
                Domain = domain,
                Sensitivity = _domainRestricted[domain] ? "restricted" : "public",
                Tokenizer = new TokenizerInfo(_tokenizer.Name, _tokenizer.Fingerprint, _tokenizer.VocabSize, _tokenizer.EosId),
                TokenDType = _dtype.ToString().ToLowerInvariant(),
                Normalization = normalization,
                EvalFraction = _config.EvalFraction,
                Sources = sources,
                Train = Split(domain, "train"),
                Eval = Split(domain, "eval"),
            };
            AtomicFile.WriteAllText(Path.Combine(_outDir, domain, DatasetManifest.FileName), manifest.ToJson(), RestrictedPaths.FileMode(_domainRestricted[domain]));
            result.Add(manifest);
        }
        return result;
    }

    SplitInfo Split(string domain, string split)
    {
        var shards = _chunks.SelectMany(c => c.Shards).Where(s => s.Domain == domain && s.Split == split).Select(s => s.Shard).ToList();
        return new SplitInfo(shards.Sum(s => s.Documents), shards.Sum(s => s.Tokens), shards);
    }
}
