using System.Text.Json;
using static TorchSharp.torch;

namespace MeLlama.Model.Tests;

/// <summary>One line of a fixture's reference.jsonl: float64 log-probs from an independent implementation.</summary>
public sealed record ReferenceSequence(int Id, int[] Tokens, double[] LogProbs);

static class Fixtures
{
    public static IReadOnlyList<ReferenceSequence> ReadReference(string fixtureDir) =>
        File.ReadLines(Path.Combine(fixtureDir, "reference.jsonl"))
            .Where(line => line.Length > 0)
            .Select(line =>
            {
                using var doc = JsonDocument.Parse(line);
                var root = doc.RootElement;
                return new ReferenceSequence(
                    root.GetProperty("id").GetInt32(),
                    root.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                    root.GetProperty("logprobs").EnumerateArray().Select(e => e.GetDouble()).ToArray());
            })
            .ToList();

    /// <summary>reference_logits.safetensors "logits.{sequence}" as fp32 [positions, vocab].</summary>
    public static Tensor ReadReferenceLogits(string fixtureDir, int sequence)
    {
        using var reader = SafeTensorsReader.Open(Path.Combine(fixtureDir, "reference_logits.safetensors"));
        return reader.ReadTensor($"logits.{sequence}", ScalarType.Float32);
    }

    /// <summary>A small random model (vocab kept small so tests stay fast).</summary>
    public static LlamaConfig TinyConfig(int kvHeads = 2, bool tied = false) => new()
    {
        HiddenSize = 64, NumLayers = 2, NumHeads = 4, NumKvHeads = kvHeads, IntermediateSize = 96, VocabSize = 300,
        MaxPositionEmbeddings = 128, TieWordEmbeddings = tied,
    };

    public static Tensor Ids(params int[] tokens) => tensor(tokens.Select(t => (long)t).ToArray(), ScalarType.Int64).unsqueeze(0);

    public static int[] RandomTokens(int count, int vocab, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => random.Next(vocab)).ToArray();
    }
}
