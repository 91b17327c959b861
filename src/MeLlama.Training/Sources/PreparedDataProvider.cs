using System.Text.Json.Nodes;
using MeLlama.Data.Datasets;
using MeLlama.Data.Sampling;
using MeLlama.Training.Config;

namespace MeLlama.Training.Sources;

/// <summary>
/// Training data from prepared datasets (`mellama prepare` output): the blended, resumable
/// <see cref="PretrainSampleStream"/> for training and each domain's held-out split for evaluation.
/// </summary>
public sealed class PreparedDataProvider(DataSection data, int rank = 0, int worldSize = 1) : IDataProvider
{
    /// <summary>The tokenizer the datasets were prepared with; all domains must agree.</summary>
    public TokenizerInfo Tokenizer()
    {
        var infos = data.Datasets.Select(d => (d.Name, Info: LoadManifest(d).Tokenizer)).ToList();
        var distinct = infos.Select(i => i.Info.Fingerprint).Distinct(StringComparer.Ordinal).ToList();
        if (distinct.Count > 1)
            throw new ConfigError("data.datasets were tokenized with different tokenizers: " +
                                  string.Join(", ", infos.Select(i => $"{i.Name}: {i.Info.Name} {i.Info.Fingerprint[..Math.Min(12, i.Info.Fingerprint.Length)]}")));
        return infos[0].Info;
    }

    public int? TokenizerVocabSize => Tokenizer().VocabSize;

    static DatasetManifest LoadManifest(DomainSource d)
    {
        try { return DatasetManifest.Load(d.Path); }
        catch (FileNotFoundException e) { throw new ConfigError($"data.datasets '{d.Name}': {e.Message}"); }
    }

    public ISampleSource OpenTraining(int seqLen, ulong seed, JsonNode? resume)
    {
        var domains = data.Datasets.Select(d => new DomainDataset(d.Name, d.Path, d.Weight)).ToList();
        var state = resume is null ? null : SampleStreamState.FromJson(resume.ToJsonString());
        return new StreamSource(PretrainSampleStream.Open(domains, seqLen, seed, rank, worldSize, state));
    }

    public IReadOnlyList<IEvalSet> OpenEvalSets(int seqLen)
    {
        var sources = data.EvalSets.Count > 0 ? data.EvalSets : data.Datasets;
        var sets = new List<IEvalSet>();
        foreach (var s in sources)
        {
            var heldOut = HeldOutSamples.Open(s.Path, seqLen);
            if (heldOut.Count == 0) { heldOut.Dispose(); continue; }
            sets.Add(new HeldOutSet(s.Name, heldOut, rank, worldSize));
        }
        return sets;
    }

    sealed class StreamSource(PretrainSampleStream stream) : ISampleSource
    {
        public int SeqLen => stream.SeqLen;
        public void NextBatch(int microBatch, Span<long> tokens) => stream.NextBatch(microBatch, tokens);
        public JsonNode State => JsonNode.Parse(stream.State.ToJson())!;
        public void Dispose() => stream.Dispose();
    }

    /// <summary>The first samples of a held-out split, shared round-robin across ranks.</summary>
    sealed class HeldOutSet(string name, HeldOutSamples samples, int rank, int worldSize) : IEvalSet
    {
        public string Name => name;

        public IEnumerable<long[]> Batches(int microBatch, int seqLen, int maxBatches)
        {
            var indices = samples.IndicesForRank(rank, worldSize, (long)maxBatches * microBatch * worldSize).ToList();
            for (int start = 0; start < indices.Count; start += microBatch)
            {
                int n = Math.Min(microBatch, indices.Count - start);
                var batch = new long[n * (seqLen + 1)];
                for (int i = 0; i < n; i++) samples.Read(indices[start + i], batch.AsSpan(i * (seqLen + 1), seqLen + 1));
                yield return batch;
            }
        }
    }
}
