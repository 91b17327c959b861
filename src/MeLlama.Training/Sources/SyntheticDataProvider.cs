using System.Text.Json.Nodes;
using MeLlama.Data.Sampling;

namespace MeLlama.Training.Sources;

/// <summary>
/// Uniform random tokens (deterministic from the seed, resumable): for throughput benchmarks of shapes that have no
/// prepared data (`mellama pretrain --synthetic-data`). Nothing can be learned from it. Like the prepared stream, sample j
/// is the j-th global sample and rank r of N takes the r-th block of each call's microBatch × N samples.
/// </summary>
public sealed class SyntheticDataProvider(int vocabSize, int rank = 0, int worldSize = 1) : IDataProvider
{
    public int? TokenizerVocabSize => vocabSize;

    public ISampleSource OpenTraining(int seqLen, ulong seed, JsonNode? resume) =>
        new Source(vocabSize, seqLen, seed, resume?["samples"]?.GetValue<long>() ?? 0, rank, worldSize);

    public IReadOnlyList<IEvalSet> OpenEvalSets(int seqLen) => [];

    sealed class Source(int vocab, int seqLen, ulong seed, long samples, int rank, int worldSize) : ISampleSource
    {
        /// <summary>Global samples drawn by all ranks together (rank-independent, so resume works on another world size).</summary>
        long _samples = samples;
        public int SeqLen => seqLen;
        public JsonNode State => new JsonObject { ["samples"] = _samples };

        public void NextBatch(int microBatch, Span<long> tokens)
        {
            long first = _samples + (long)rank * microBatch;
            _samples += (long)microBatch * worldSize;
            for (int s = 0; s < microBatch; s++)
            {
                // A stable hash (HashCode.Combine is randomised per process): the same samples in every process, so
                // resume and a different number of ranks see exactly the same tokens.
                var rng = new Random(unchecked((int)StableHash.Combine(seed, (ulong)(first + s))));
                var row = tokens.Slice(s * (seqLen + 1), seqLen + 1);
                for (int i = 0; i < row.Length; i++) row[i] = rng.Next(vocab);
            }
        }

        public void Dispose() { }
    }
}
