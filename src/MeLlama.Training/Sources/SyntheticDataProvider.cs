using System.Text.Json.Nodes;

namespace MeLlama.Training.Sources;

/// <summary>
/// Uniform random tokens (deterministic from the seed, resumable): for throughput benchmarks of shapes that have no
/// prepared data (`mellama pretrain --synthetic-data`). Nothing can be learned from it.
/// </summary>
public sealed class SyntheticDataProvider(int vocabSize) : IDataProvider
{
    public int? TokenizerVocabSize => vocabSize;

    public ISampleSource OpenTraining(int seqLen, ulong seed, JsonNode? resume) =>
        new Source(vocabSize, seqLen, seed, resume?["samples"]?.GetValue<long>() ?? 0);

    public IReadOnlyList<IEvalSet> OpenEvalSets(int seqLen) => [];

    sealed class Source(int vocab, int seqLen, ulong seed, long samples) : ISampleSource
    {
        long _samples = samples;
        public int SeqLen => seqLen;
        public JsonNode State => new JsonObject { ["samples"] = _samples };

        public void NextBatch(int microBatch, Span<long> tokens)
        {
            for (int s = 0; s < microBatch; s++, _samples++)
            {
                var rng = new Random(HashCode.Combine(seed, _samples));
                var row = tokens.Slice(s * (seqLen + 1), seqLen + 1);
                for (int i = 0; i < row.Length; i++) row[i] = rng.Next(vocab);
            }
        }

        public void Dispose() { }
    }
}
