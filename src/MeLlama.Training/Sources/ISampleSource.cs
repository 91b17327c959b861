using System.Text.Json.Nodes;

namespace MeLlama.Training.Sources;

/// <summary>
/// The training token stream as the trainer sees it: fixed-length samples of seq_len + 1 tokens, deterministic
/// for a seed, with a small JSON state that a checkpoint stores and a resumed run restores.
/// </summary>
public interface ISampleSource : IDisposable
{
    int SeqLen { get; }
    /// <summary>Fills <paramref name="tokens"/> with <paramref name="microBatch"/> × (SeqLen + 1) token ids.</summary>
    void NextBatch(int microBatch, Span<long> tokens);
    /// <summary>Position in the stream (JSON-serialisable), enough to continue exactly from here.</summary>
    JsonNode State { get; }
}

/// <summary>A held-out set: the same first batches every time it is evaluated.</summary>
public interface IEvalSet
{
    string Name { get; }
    /// <summary>Up to <paramref name="maxBatches"/> batches of <paramref name="microBatch"/> × (seqLen + 1) tokens.</summary>
    IEnumerable<long[]> Batches(int microBatch, int seqLen, int maxBatches);
}

/// <summary>Opens the data a run trains and evaluates on (the prepared-dataset pipeline, or a test stand-in).</summary>
public interface IDataProvider
{
    /// <summary>Opens the stream at its start (<paramref name="resume"/> null) or where a checkpoint left it.</summary>
    ISampleSource OpenTraining(int seqLen, ulong seed, JsonNode? resume);
    IReadOnlyList<IEvalSet> OpenEvalSets(int seqLen);
    /// <summary>Vocabulary size of the tokenizer the data was tokenized with (null when unknown).</summary>
    int? TokenizerVocabSize { get; }
}
