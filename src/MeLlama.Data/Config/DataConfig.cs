using System.Text.Json;
using System.Text.Json.Serialization;

namespace MeLlama.Data.Config;

/// <summary>
/// A data preparation config (JSON): which sources to read, how to clean and tokenize them, how to shard.
/// Relative paths are resolved against the config file's folder. See configs/data/*.json.
/// </summary>
public sealed record DataConfig
{
    /// <summary>Free name of the preparation (e.g. "me-llama").</summary>
    public string Name { get; init; } = "data";
    /// <summary>"gpt2" (built-in, demo) or a path to a SentencePiece tokenizer.model / HF folder.</summary>
    public string Tokenizer { get; init; } = "gpt2";
    /// <summary>"NFC" (default), "NFKC" or "none".</summary>
    public string Normalization { get; init; } = "NFC";
    /// <summary>Documents shorter than this (characters, after clean-up) are dropped as too_short.</summary>
    public int MinChars { get; init; } = 32;
    /// <summary>Records longer than this (characters) are dropped as too_large (guards against a whole file read as one field).</summary>
    public int MaxChars { get; init; } = 16 << 20;
    /// <summary>Cap of one .bin shard, in MiB. Every shard is closed at the same input point ("chunk"), which is also the restart unit.</summary>
    public double ShardMegabytes { get; init; } = 1024;
    /// <summary>Fraction of documents (by content hash) held out for eval loss, per domain.</summary>
    public double EvalFraction { get; init; } = 0.005;
    /// <summary>Exact de-duplication by content hash across all sources (first occurrence in config order kept).</summary>
    public bool Dedup { get; init; } = true;
    /// <summary>Intended domain weights for training (informational here; the trainer's config decides).</summary>
    public IReadOnlyDictionary<string, double>? Mixture { get; init; }
    public required IReadOnlyList<SourceConfig> Sources { get; init; }

    [JsonIgnore] public string BaseDirectory { get; init; } = Directory.GetCurrentDirectory();

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        WriteIndented = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public static DataConfig Load(string path)
    {
        string full = Path.GetFullPath(path);
        if (!File.Exists(full)) throw new DataConfigException($"data config '{path}' does not exist");
        DataConfig? config;
        try { config = JsonSerializer.Deserialize<DataConfig>(File.ReadAllText(full), Json); }
        catch (JsonException e) { throw new DataConfigException($"{path}: {e.Message}"); }
        if (config == null) throw new DataConfigException($"{path}: empty config");
        config = config with { BaseDirectory = Path.GetDirectoryName(full)! };
        config.Validate(path);
        return config;
    }

    public static DataConfig Parse(string json, string baseDirectory)
    {
        DataConfig? config;
        try { config = JsonSerializer.Deserialize<DataConfig>(json, Json); }
        catch (JsonException e) { throw new DataConfigException($"data config: {e.Message}"); }
        config = (config ?? throw new DataConfigException("empty data config")) with { BaseDirectory = Path.GetFullPath(baseDirectory) };
        config.Validate("data config");
        return config;
    }

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    public void Validate(string where)
    {
        if (Sources.Count == 0) throw new DataConfigException($"{where}: 'sources' is empty");
        if (MinChars < 0) throw new DataConfigException($"{where}: minChars must be ≥ 0");
        if (MaxChars < 1) throw new DataConfigException($"{where}: maxChars must be ≥ 1");
        if (!(ShardMegabytes > 0)) throw new DataConfigException($"{where}: shardMegabytes must be > 0");
        if (!(EvalFraction >= 0 && EvalFraction < 1)) throw new DataConfigException($"{where}: evalFraction must be in [0, 1)");
        if (Normalization.ToUpperInvariant() is not ("NFC" or "NFKC" or "NONE")) throw new DataConfigException($"{where}: normalization must be NFC, NFKC or none");
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < Sources.Count; i++)
        {
            var s = Sources[i];
            string at = $"{where}: sources[{i}]" + (string.IsNullOrEmpty(s.Name) ? "" : $" ('{s.Name}')");
            if (string.IsNullOrWhiteSpace(s.Name)) throw new DataConfigException($"{at}: 'name' is required");
            if (!names.Add(s.Name)) throw new DataConfigException($"{at}: duplicate source name");
            if (s.Paths.Count == 0) throw new DataConfigException($"{at}: 'paths' is empty");
            if (!SourceConfig.Formats.Contains(s.Format)) throw new DataConfigException($"{at}: format '{s.Format}' is not one of {string.Join(", ", SourceConfig.Formats)}");
            if (!SourceConfig.Domains.Contains(s.Domain)) throw new DataConfigException($"{at}: domain '{s.Domain}' is not one of {string.Join(", ", SourceConfig.Domains)}");
            if (s.Sensitivity is not (null or "public" or "restricted")) throw new DataConfigException($"{at}: sensitivity must be public or restricted");
            if (s.Domain == "clinical" && s.Sensitivity == "public") throw new DataConfigException($"{at}: clinical sources are restricted (remove \"sensitivity\": \"public\")");
            if (s.OnError is not ("skip" or "fail")) throw new DataConfigException($"{at}: onError must be skip or fail");
            if (s.Format != "text" && s.Fields is { Count: 0 }) throw new DataConfigException($"{at}: 'fields' is empty");
            if (s.TextMode is not ("file" or "paragraph" or "line")) throw new DataConfigException($"{at}: textMode must be file, paragraph or line");
        }
    }
}

/// <summary>One declared input: files, their format, which field(s) hold the text, and its governance facts.</summary>
public sealed record SourceConfig
{
    public static readonly string[] Formats = ["jsonl", "json-records", "csv", "parquet", "text"];
    public static readonly string[] Domains = ["biomedical", "clinical", "general"];

    public required string Name { get; init; }
    /// <summary>Files, folders (all files below) or globs (*, ?, **); .gz and .zst are decompressed on the fly.</summary>
    public required IReadOnlyList<string> Paths { get; init; }
    public IReadOnlyList<string> Exclude { get; init; } = [];
    public required string Format { get; init; }
    /// <summary>Field(s)/column(s) whose text forms the document, joined by <see cref="Joiner"/> (arrays of strings too). Default ["text"].</summary>
    public IReadOnlyList<string>? Fields { get; init; }
    public string Joiner { get; init; } = "\n";
    public required string Domain { get; init; }
    public string? Licence { get; init; }
    /// <summary>How access is granted, e.g. "PhysioNet credentialed (DUA)" or "public".</summary>
    public string? Access { get; init; }
    /// <summary>"public" or "restricted"; clinical sources are always restricted.</summary>
    public string? Sensitivity { get; init; }
    /// <summary>"skip" (default: count, report file and line, go on) or "fail" (stop with an error).</summary>
    public string OnError { get; init; } = "skip";
    /// <summary>For format "text": "file" (one document per file), "paragraph" (blank-line separated) or "line".</summary>
    public string TextMode { get; init; } = "file";

    [JsonIgnore] public IReadOnlyList<string> TextFields => Fields ?? ["text"];
    [JsonIgnore] public bool IsRestricted => Domain == "clinical" || Sensitivity == "restricted";
    [JsonIgnore] public bool FailOnError => OnError == "fail";
}

public sealed class DataConfigException(string message) : Exception(message);
