using System.Text.Json;
using System.Text.Json.Serialization;
using MeLlama.Data.Shards;

namespace MeLlama.Data.Datasets;

/// <summary>
/// <c>manifest.json</c> of a prepared dataset (one folder per domain): where the text came from, how it was
/// tokenized, what was dropped and why, and the shards with their checksums. Written last and atomically:
/// a folder without a manifest is not a finished dataset.
/// </summary>
public sealed record DatasetManifest
{
    public const string FileName = "manifest.json";
    public const int CurrentFormatVersion = 1;

    public int FormatVersion { get; init; } = CurrentFormatVersion;
    public required string Name { get; init; }
    public required string Domain { get; init; }
    /// <summary>"public" or "restricted" (e.g. PhysioNet-credentialed clinical text: owner-only files).</summary>
    public required string Sensitivity { get; init; }
    public required TokenizerInfo Tokenizer { get; init; }
    /// <summary>Megatron dtype name of the .bin tokens ("uint16" or "int32").</summary>
    public required string TokenDType { get; init; }
    public required string Normalization { get; init; }
    /// <summary>Documents whose content hash falls below this fraction form the held-out (eval) split.</summary>
    public required double EvalFraction { get; init; }
    public required IReadOnlyList<SourceReport> Sources { get; init; }
    public required SplitInfo Train { get; init; }
    public required SplitInfo Eval { get; init; }

    public bool IsRestricted => Sensitivity == "restricted";

    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    public static DatasetManifest Load(string datasetDir)
    {
        string path = Path.Combine(datasetDir, FileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"'{datasetDir}' is not a prepared dataset: {FileName} is missing (run `mellama prepare`)", path);
        try
        {
            return JsonSerializer.Deserialize<DatasetManifest>(File.ReadAllText(path), Json)
                ?? throw new InvalidDataException($"{path}: empty manifest");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not a valid dataset manifest ({e.Message})", e);
        }
    }
}

public sealed record TokenizerInfo(string Name, string Fingerprint, int VocabSize, int EosId);

public sealed record SplitInfo(long Documents, long Tokens, IReadOnlyList<ShardInfo> Shards)
{
    public static SplitInfo Empty { get; } = new(0, 0, []);
}

/// <summary>What one declared source contributed, and what it lost.</summary>
public sealed record SourceReport
{
    public required string Name { get; init; }
    public required string Format { get; init; }
    public string? Licence { get; init; }
    public string? Access { get; init; }
    public required IReadOnlyList<InputFileReport> Files { get; init; }
    public long Records { get; init; }
    public long Documents { get; init; }
    public long Tokens { get; init; }
    public long TextBytes { get; init; }
    public required IReadOnlyDictionary<string, long> Dropped { get; init; }
    /// <summary>First problems met (file, line, reason category); never document text.</summary>
    public required IReadOnlyList<InputProblem> Problems { get; init; }
}

public sealed record InputFileReport(string Path, long Bytes, string? Sha256, string Status);

public sealed record InputProblem(string File, long Line, string Reason);
