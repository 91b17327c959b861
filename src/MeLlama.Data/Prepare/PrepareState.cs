using System.Text.Json;
using MeLlama.Data.Datasets;
using MeLlama.Data.Shards;

namespace MeLlama.Data.Prepare;

/// <summary>Running totals for one source (cumulative; snapshotted into every chunk record).</summary>
public sealed class SourceStats
{
    public const int MaxProblems = 100;

    public string Name { get; set; } = "";
    public string Domain { get; set; } = "";
    public long Records { get; set; }
    public long TextBytes { get; set; }
    public long TrainDocuments { get; set; }
    public long TrainTokens { get; set; }
    public long EvalDocuments { get; set; }
    public long EvalTokens { get; set; }
    public long FilesFailed { get; set; }
    public SortedDictionary<string, long> Dropped { get; set; } = new(StringComparer.Ordinal);
    public List<InputProblem> Problems { get; set; } = [];

    public long Documents => TrainDocuments + EvalDocuments;
    public long Tokens => TrainTokens + EvalTokens;

    public void Drop(string reason) => Dropped[reason] = Dropped.GetValueOrDefault(reason) + 1;

    public void Report(string file, long line, string reason)
    {
        if (Problems.Count < MaxProblems) Problems.Add(new InputProblem(file, line, reason));
    }

    public SourceStats Clone()
    {
        var c = (SourceStats)MemberwiseClone();
        c.Dropped = new SortedDictionary<string, long>(Dropped, StringComparer.Ordinal);
        c.Problems = [.. Problems];
        return c;
    }
}

/// <summary>A shard written in a chunk, with the dataset (domain) and split it belongs to.</summary>
public sealed record ChunkShard(string Domain, string Split, ShardInfo Shard);

/// <summary>
/// The restart unit of `prepare`: written (atomically, in .prepare/chunk-NNNNN.json) after all of the chunk's
/// shards are complete. Holds the input position after the chunk, cumulative per-source stats, the files that
/// were finished during the chunk, and the dedup hashes file of the documents the chunk kept.
/// </summary>
public sealed record ChunkRecord
{
    public required int Index { get; init; }
    public required InputPosition Position { get; init; }
    /// <summary>True for the chunk that ends the input.</summary>
    public required bool Final { get; init; }
    public required IReadOnlyList<ChunkShard> Shards { get; init; }
    public required IReadOnlyList<FileOutcome> FilesCompleted { get; init; }
    public required IReadOnlyList<SourceStats> Sources { get; init; }
    public required string DedupFile { get; init; }
    public required long DedupBytes { get; init; }
    public required string DedupSha256 { get; init; }

    public static readonly JsonSerializerOptions Json = new(DatasetManifest.Json) { WriteIndented = false };
}

/// <summary>What a preparation was run with; a resume with other settings or other inputs is refused.</summary>
public sealed record PrepareSettings
{
    public required string Fingerprint { get; init; }
    public required IReadOnlyList<IReadOnlyList<string>> Files { get; init; }
}
