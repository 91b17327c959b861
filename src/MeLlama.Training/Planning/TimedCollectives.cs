using System.Diagnostics;
using MeLlama.Distributed;
using static TorchSharp.torch;

namespace MeLlama.Training.Planning;

/// <summary>
/// An <see cref="ICollectives"/> that forwards every call and adds its wall time and payload to per-operation
/// totals, so a benchmark can report the share of a training step spent inside collectives. The calls are
/// synchronous (see <see cref="ICollectives"/>), so the wall time of a call is its whole cost to this rank:
/// transfer, reduction and waiting for slower peers. One thread at a time, like the wrapped communicator. Under an
/// engine that prefetches (full shard + freeAfterUse) the calls run on its communication thread and partly overlap
/// compute, so the totals are time inside collectives, not time the step waited for them.
/// </summary>
public sealed class TimedCollectives(ICollectives inner) : ICollectives
{
    /// <summary>Totals of one operation kind since the last <see cref="Reset"/>.</summary>
    public sealed record OpTotals(string Op, long Calls, TimeSpan Time, long Bytes);

    readonly Dictionary<string, (long Calls, long Ticks, long Bytes)> _totals = new(StringComparer.Ordinal);

    public int Rank => inner.Rank;
    public int WorldSize => inner.WorldSize;
    public string Backend => inner.Backend;
    public TimeSpan Timeout => inner.Timeout;

    /// <summary>Time inside any collective since the last <see cref="Reset"/>.</summary>
    public TimeSpan Total => TimeSpan.FromTicks(_totals.Values.Sum(v => v.Ticks) * TimeSpan.TicksPerSecond / Stopwatch.Frequency);

    public IReadOnlyList<OpTotals> Totals => _totals
        .Select(kv => new OpTotals(kv.Key, kv.Value.Calls, TimeSpan.FromTicks(kv.Value.Ticks * TimeSpan.TicksPerSecond / Stopwatch.Frequency), kv.Value.Bytes))
        .OrderBy(t => t.Op, StringComparer.Ordinal).ToList();

    public void Reset() => _totals.Clear();

    void Time(string op, long bytes, Action call)
    {
        long start = Stopwatch.GetTimestamp();
        try { call(); }
        finally
        {
            long ticks = Stopwatch.GetTimestamp() - start;
            var (calls, sum, b) = _totals.GetValueOrDefault(op);
            _totals[op] = (calls + 1, sum + ticks, b + bytes);
        }
    }

    static long Bytes(Tensor t) => t.numel() * t.ElementSize;

    public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum, TimeSpan? timeout = null) =>
        Time("all_reduce", Bytes(tensor), () => inner.AllReduce(tensor, op, timeout));

    public void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum, TimeSpan? timeout = null) =>
        Time("reduce_scatter", Bytes(input), () => inner.ReduceScatter(input, output, op, timeout));

    public void AllGather(Tensor input, Tensor output, TimeSpan? timeout = null) =>
        Time("all_gather", Bytes(output), () => inner.AllGather(input, output, timeout));

    public void Broadcast(Tensor tensor, int root = 0, TimeSpan? timeout = null) =>
        Time("broadcast", Bytes(tensor), () => inner.Broadcast(tensor, root, timeout));

    public void Barrier(TimeSpan? timeout = null) => Time("barrier", 0, () => inner.Barrier(timeout));

    public void Abort(string reason) => inner.Abort(reason);

    public void Dispose() => inner.Dispose();
}
