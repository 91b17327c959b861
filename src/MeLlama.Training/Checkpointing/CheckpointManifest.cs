using System.Text.Json.Serialization;

namespace MeLlama.Training.Checkpointing;

/// <summary>
/// <c>manifest.json</c>, the last file written into a checkpoint folder: every other file with its size and sha256.
/// A folder without it, or whose files do not match it, is not a checkpoint.
/// </summary>
public sealed record CheckpointManifest
{
    public int FormatVersion { get; init; } = 1;
    public long Step { get; init; }
    public DateTimeOffset CreatedUtc { get; init; }
    /// <summary>Ranks that wrote the checkpoint (their shard files are all listed in <see cref="Files"/>).</summary>
    public int WorldSize { get; init; } = 1;
    public Dictionary<string, ManifestFile> Files { get; init; } = [];
}

public sealed record ManifestFile(long Size, string Sha256);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true)]
[JsonSerializable(typeof(CheckpointManifest))]
public sealed partial class CheckpointManifestJson : JsonSerializerContext;
