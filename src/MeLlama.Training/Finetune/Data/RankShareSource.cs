using System.Text.Json.Nodes;
using MeLlama.Training.Sources;

namespace MeLlama.Training.Finetune.Data;

/// <summary>
/// One rank's share of every global fine-tuning batch. The global batch is what one process would train on in a step
/// (<c>micro_batch × grad_accum</c> rows drawn from the shared <see cref="ISampleSource"/>, which every rank replays
/// identically), whatever the number of ranks, so a run gives the same steps on 1, 2 or N ranks and a checkpoint
/// (whose sampler state is the global position) resumes on any number of ranks.
/// <para>Rank r takes the contiguous block [r·G/N, (r+1)·G/N) of the G rows, so the blocks differ by at most one row,
/// and serves it as <see cref="MicroBatchesPerRank"/> micro-batches of <c>micro_batch</c> rows. Every rank must run
/// the same number of forwards (the sharded engine gathers parameters in each), so a share shorter than that is filled
/// with rows that hold no target (input only, token 0): they add nothing to the loss or the gradient, only compute.</para>
/// </summary>
public sealed class RankShareSource : ISampleSource
{
    readonly ISampleSource _global;
    readonly int _microBatch;
    readonly int _globalRows;
    readonly int _rank;
    readonly int _world;
    readonly long[] _step;
    int _served;

    /// <param name="global">The global stream (its state is the run's data position).</param>
    /// <param name="globalRows">Rows per optimizer step: micro_batch × grad_accum.</param>
    public RankShareSource(ISampleSource global, int microBatch, int globalRows, int rank, int world)
    {
        if (microBatch <= 0 || globalRows <= 0) throw new ArgumentOutOfRangeException(nameof(globalRows), "micro_batch and rows per step must be > 0");
        if (rank < 0 || rank >= world) throw new ArgumentOutOfRangeException(nameof(rank));
        _global = global;
        _microBatch = microBatch;
        _globalRows = globalRows;
        _rank = rank;
        _world = world;
        MicroBatchesPerRank = MicroBatchesFor(microBatch, globalRows, world);
        _step = new long[MicroBatchesPerRank * microBatch * SampleTokens];
        _served = MicroBatchesPerRank; // the next call starts a step
    }

    /// <summary>Micro-batches each rank runs per step: enough for the largest share, ⌈⌈G/N⌉ / micro_batch⌉.</summary>
    public static int MicroBatchesFor(int microBatch, int globalRows, int world) =>
        ((globalRows + world - 1) / world + microBatch - 1) / microBatch;

    /// <summary>Row-slots per step that carry no data (all ranks together): the compute an uneven split wastes.</summary>
    public static int PaddingRows(int microBatch, int globalRows, int world) =>
        MicroBatchesFor(microBatch, globalRows, world) * microBatch * world - globalRows;

    /// <summary>First global row of <paramref name="rank"/>'s block.</summary>
    public static int BlockStart(int globalRows, int rank, int world) => (int)((long)globalRows * rank / world);

    public int MicroBatchesPerRank { get; }
    public int SeqLen => _global.SeqLen;
    int SampleTokens => SeqLen + 1;

    /// <summary>The global position: updated once per step, when the step's first micro-batch is asked for.</summary>
    public JsonNode State => _global.State;

    public void NextBatch(int microBatch, Span<long> tokens)
    {
        if (microBatch != _microBatch) throw new ArgumentException($"this source serves micro-batches of {_microBatch} rows, not {microBatch}", nameof(microBatch));
        int width = SampleTokens;
        if (tokens.Length != microBatch * width) throw new ArgumentException($"buffer holds {tokens.Length} tokens, expected {microBatch} × {width}");
        if (_served == MicroBatchesPerRank) DrawStep();
        _step.AsSpan(_served * microBatch * width, microBatch * width).CopyTo(tokens);
        _served++;
    }

    /// <summary>Draws the whole global batch (every rank does, so the stream stays in step) and keeps this rank's block.</summary>
    void DrawStep()
    {
        int width = SampleTokens;
        var all = new long[_globalRows * width];
        _global.NextBatch(_globalRows, all);
        int start = BlockStart(_globalRows, _rank, _world), end = BlockStart(_globalRows, _rank + 1, _world);
        all.AsSpan(start * width, (end - start) * width).CopyTo(_step);
        _step.AsSpan((end - start) * width).Fill(SftRows.Encode(0, target: false));
        _served = 0;
    }

    public void Dispose() => _global.Dispose();
}
