using System.Text.Json;
using System.Text.Json.Serialization;

namespace MeLlama.Data.Sampling;

/// <summary>
/// Where a <see cref="PretrainSampleStream"/> stands: how many global samples have been drawn in total and
/// from each domain. It does not depend on the number of ranks, so a checkpoint written by N ranks resumes
/// on M ranks with exactly the samples an uninterrupted run would have drawn. Seed and sequence length are
/// kept to refuse a resume that could not be exact.
/// </summary>
public sealed record SampleStreamState
{
    public int Version { get; init; } = 1;
    public required ulong Seed { get; init; }
    public required int SeqLen { get; init; }
    public required long GlobalSamples { get; init; }
    /// <summary>Samples drawn so far per domain, in the stream's domain order.</summary>
    public required IReadOnlyList<DomainCursor> Domains { get; init; }

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = false };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    public static SampleStreamState FromJson(string json) =>
        JsonSerializer.Deserialize<SampleStreamState>(json, Json) ?? throw new InvalidDataException("empty sample stream state");
}

public sealed record DomainCursor(string Name, long Samples);
