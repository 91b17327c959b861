using System.Text.Json.Serialization;
using MeLlama.Core.IO;

namespace MeLlama.Training.Checkpointing;

/// <summary>
/// <c>manifest.json</c>, the last file written into a checkpoint folder: every other file with its size and checksum.
/// A folder without it, or whose files do not match it, is not a checkpoint. Format 2 records XXH128 checksums
/// (<see cref="DigestAlgorithm"/> says why); format 1 manifests, with sha256, are still read and verified.
/// </summary>
public sealed record CheckpointManifest
{
    public const int CurrentFormat = 2;
    /// <summary>The checksum new checkpoints record.</summary>
    public const DigestAlgorithm Digest = DigestAlgorithm.Xxh128;

    public int FormatVersion { get; init; } = CurrentFormat;
    public long Step { get; init; }
    public DateTimeOffset CreatedUtc { get; init; }
    /// <summary>Ranks that wrote the checkpoint (their shard files are all listed in <see cref="Files"/>).</summary>
    public int WorldSize { get; init; } = 1;
    public Dictionary<string, ManifestFile> Files { get; init; } = [];
}

/// <summary>One file of a checkpoint: its size and one checksum (xxh128 from format 2 on, sha256 before).</summary>
public sealed record ManifestFile(
    long Size,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Sha256 = null,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Xxh128 = null)
{
    public static ManifestFile Of(long size, DigestAlgorithm algorithm, string hex) => algorithm switch
    {
        DigestAlgorithm.Xxh128 => new ManifestFile(size, Xxh128: hex),
        DigestAlgorithm.Sha256 => new ManifestFile(size, Sha256: hex),
        _ => throw new ArgumentOutOfRangeException(nameof(algorithm), algorithm, null),
    };

    /// <summary>The checksum to verify the file with (xxh128 when both are listed), or null when the manifest lists none.</summary>
    [JsonIgnore]
    public (DigestAlgorithm Algorithm, string Hex)? Checksum =>
        Xxh128 is not null ? (DigestAlgorithm.Xxh128, Xxh128) : Sha256 is not null ? (DigestAlgorithm.Sha256, Sha256) : null;

    /// <summary>Null when <paramref name="path"/>'s bytes have this checksum, else the problem ("NAME fails its xxh128 checksum").</summary>
    public string? Verify(string name, string path)
    {
        if (Checksum is not { } c) return $"{name} has no checksum in manifest.json";
        return Matches(ContentDigest.OfFile(path, c.Algorithm)) ? null : $"{name} fails its {ContentDigest.Name(c.Algorithm)} checksum";
    }

    public bool Matches(string hex) => Checksum is { } c && string.Equals(hex, c.Hex, StringComparison.OrdinalIgnoreCase);
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true)]
[JsonSerializable(typeof(CheckpointManifest))]
public sealed partial class CheckpointManifestJson : JsonSerializerContext;
