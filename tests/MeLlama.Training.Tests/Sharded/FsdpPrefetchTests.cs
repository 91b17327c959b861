using System.Collections.Concurrent;
using System.Diagnostics;
using MeLlama.Distributed;
using MeLlama.Model;
using MeLlama.Training.Engine.Sharded;
using Xunit.Abstractions;
using static TorchSharp.torch;
using static MeLlama.Training.Tests.Sharded.TinyRun;

namespace MeLlama.Training.Tests.Sharded;

/// <summary>
/// Prefetching all-gathers (full shard + freeAfterUse): it is on by default only there, it really overlaps
/// communication with compute, and failures still surface from <see cref="FsdpTrainStep.Step"/> without hanging.
/// Loss equivalence with prefetch is in <see cref="FsdpTrainStepTests.StrategyMatchesSingleProcessLossesAndWeights"/>.
/// </summary>
public class FsdpPrefetchTests(ITestOutputHelper output)
{
    [Fact]
    public void PrefetchDefaultsOnOnlyForFullShardThatFreesAfterUse()
    {
        using var comm = new SingleProcessCollectives();
        bool Prefetches(ShardingStrategy strategy, bool free, bool? prefetch = null)
        {
            using var scope = NewDisposeScope();
            using var model = new LlamaForCausalLM(Tiny, seed: Seed);
            using var engine = new FsdpTrainStep(model, comm, Options, strategy, free, prefetch);
            return engine.Prefetch;
        }
        Assert.True(Prefetches(ShardingStrategy.FullShard, free: true));
        Assert.False(Prefetches(ShardingStrategy.FullShard, free: true, prefetch: false));
        Assert.False(Prefetches(ShardingStrategy.FullShard, free: false));
        Assert.False(Prefetches(ShardingStrategy.ShardGradOp, free: false));
        Assert.False(Prefetches(ShardingStrategy.NoShard, free: false));
        var e = Assert.Throws<ArgumentException>(() => Prefetches(ShardingStrategy.FullShard, free: false, prefetch: true));
        Assert.Contains("prefetch", e.Message);
    }

    /// <summary>
    /// Every all-gather takes <see cref="Delay"/> longer and every unit "computes" for <see cref="Delay"/> (a sleep in
    /// the engine's probe), so the serial step costs about 2·uses·Delay and a prefetching one about (uses + 1)·Delay.
    /// Two checks: recorded intervals (a gather of one unit running while another unit computes: never without
    /// prefetch, for nearly every gather with it) and the step wall time, compared on the same ranks in the same run.
    /// </summary>
    [Fact]
    public void NextUnitsGatherRunsWhileTheCurrentUnitComputes()
    {
        const int world = 2;
        var wall = new Dictionary<bool, TimeSpan>();
        var overlapped = new Dictionary<bool, (int Overlapping, int Gathers)>();
        InProcessRanks.Run(world, inner =>
        {
            var comm = new SlowCollectives(inner, Delay);
            foreach (bool prefetch in new[] { false, true })
            {
                using var scope = NewDisposeScope();
                using var model = new LlamaForCausalLM(Tiny, seed: Seed);
                using var engine = new FsdpTrainStep(model, comm, Options, ShardingStrategy.FullShard, freeAfterUse: true, prefetch: prefetch);
                var busy = new ConcurrentQueue<(long Start, long End)>();
                long started = 0;
                int maxAlive = 0;
                engine.UnitInUse = (unit, inUse) =>
                {
                    if (inUse)
                    {
                        // Full-size buffers alive while a unit computes: the gathered units plus the one gathering ahead.
                        var ahead = engine.PrefetchedUnit;
                        maxAlive = Math.Max(maxAlive, engine.Units.Count(u => u.IsGathered) + (ahead is null ? 0 : 1));
                        Assert.NotEqual(unit, ahead);
                        started = Stopwatch.GetTimestamp();
                        Thread.Sleep(Delay); // the unit's compute, made long enough to hide a gather behind
                    }
                    else busy.Enqueue((started, Stopwatch.GetTimestamp()));
                };
                var batch = RankBatch(0, comm.Rank, world).Take(1).ToList(); // one micro-batch: 7 unit uses
                comm.Gathers.Clear();
                var clock = Stopwatch.StartNew();
                engine.Step(batch, Lr(0));
                var elapsed = clock.Elapsed;
                if (comm.Rank != 0) continue;
                wall[prefetch] = elapsed;
                var gathers = comm.Gathers.ToList();
                int overlapping = gathers.Count(g => busy.Any(b => g.Start < b.End && b.Start < g.End));
                overlapped[prefetch] = (overlapping, gathers.Count);
                Assert.Equal(prefetch ? 2 : 1, maxAlive);
            }
        });
        output.WriteLine($"rank 0 step: serial {wall[false].TotalMilliseconds:F0} ms, prefetch {wall[true].TotalMilliseconds:F0} ms; " +
            $"gathers overlapping a unit's compute: serial {overlapped[false]}, prefetch {overlapped[true]}");
        int uses = 2 * Tiny.NumLayers + 3;
        Assert.Equal(uses, overlapped[false].Gathers);
        Assert.Equal(uses, overlapped[true].Gathers);
        Assert.Equal(0, overlapped[false].Overlapping);
        // Every gather but the first of the micro-batch is queued before the previous unit computes; allow one
        // that a badly delayed worker thread started only after that compute ended.
        Assert.True(overlapped[true].Overlapping >= uses - 2, $"only {overlapped[true].Overlapping} of {uses} gathers overlapped compute");
        // Serial ≈ 2·7·Delay = 560 ms and prefetch ≈ 8·Delay = 320 ms; real compute and scheduling add to both.
        Assert.True(wall[true] < wall[false] * 0.8, $"prefetch step {wall[true]} is not clearly below the serial {wall[false]}");
    }

    /// <summary>
    /// Rank 1's communicator throws inside a prefetched all-gather: its Step rethrows that exception and its engine
    /// disposes at once; rank 1 then leaves, and rank 0 (waiting in that gather on its worker) fails within the
    /// timeout with a <see cref="CollectiveException"/> naming rank 1, and also disposes without hanging.
    /// </summary>
    [Fact]
    public void FailureInAPrefetchedGatherSurfacesFromStepAndDisposeReturns()
    {
        const int world = 2;
        var timeout = TimeSpan.FromSeconds(10);
        var errors = new Exception?[world];
        var failedAfter = new TimeSpan[world];
        var disposeTook = new TimeSpan[world];
        InProcessRanks.Run(world, inner =>
        {
            // Third gather of rank 1's second step: layer 1's, queued while layer 0 computes.
            var comm = new SlowCollectives(inner, TimeSpan.Zero) { FailAtGather = inner.Rank == 1 ? 2 * Tiny.NumLayers + 3 + 3 : -1 };
            using var scope = NewDisposeScope();
            using var model = new LlamaForCausalLM(Tiny, seed: Seed);
            var engine = new FsdpTrainStep(model, comm, Options, ShardingStrategy.FullShard, freeAfterUse: true);
            Assert.True(engine.Prefetch);
            var batch = RankBatch(0, comm.Rank, world).Take(1).ToList();
            engine.Step(batch, Lr(0)); // healthy step
            var clock = Stopwatch.StartNew();
            errors[comm.Rank] = Record.Exception(() => engine.Step(batch, Lr(1)));
            failedAfter[comm.Rank] = clock.Elapsed;
            // The engine stays failed: the next step rethrows instead of issuing more collectives.
            Assert.NotNull(Record.Exception(() => engine.Step(batch, Lr(2))));
            clock.Restart();
            engine.Dispose();
            disposeTook[comm.Rank] = clock.Elapsed;
        }, timeout);
        output.WriteLine($"rank 0: {errors[0]?.GetType().Name} after {failedAfter[0]}: {errors[0]?.Message}");
        output.WriteLine($"rank 1: {errors[1]?.GetType().Name} after {failedAfter[1]}: {errors[1]?.Message}");
        output.WriteLine($"dispose took {disposeTook[0]} and {disposeTook[1]}");
        var injected = Assert.IsType<InvalidOperationException>(errors[1]);
        Assert.Contains(SlowCollectives.InjectedFailure, injected.Message);
        var e0 = Assert.IsType<CollectiveException>(errors[0]);
        Assert.Equal(1, e0.FailedRank);
        Assert.Contains("rank 1", e0.Message);
        Assert.True(failedAfter[0] < timeout + TimeSpan.FromSeconds(5), $"rank 0 failed only after {failedAfter[0]}");
        Assert.All(disposeTook, t => Assert.True(t < TimeSpan.FromSeconds(5), $"dispose took {t}"));
    }

    static readonly TimeSpan Delay = TimeSpan.FromMilliseconds(40);

    /// <summary>Forwards to a real communicator; all-gathers are slowed by a delay, timestamped, and one can be made to throw.</summary>
    sealed class SlowCollectives(ICollectives inner, TimeSpan delay) : ICollectives
    {
        public const string InjectedFailure = "injected all-gather failure";
        int _gathers;

        public ConcurrentQueue<(long Start, long End)> Gathers { get; } = new();
        /// <summary>1-based index of the all-gather that throws instead of running; -1: none.</summary>
        public int FailAtGather { get; init; } = -1;

        public int Rank => inner.Rank;
        public int WorldSize => inner.WorldSize;
        public string Backend => inner.Backend;
        public TimeSpan Timeout => inner.Timeout;

        public void AllGather(Tensor input, Tensor output, TimeSpan? timeout = null)
        {
            if (Interlocked.Increment(ref _gathers) == FailAtGather) throw new InvalidOperationException(InjectedFailure);
            long start = Stopwatch.GetTimestamp();
            if (delay > TimeSpan.Zero) Thread.Sleep(delay);
            inner.AllGather(input, output, timeout);
            Gathers.Enqueue((start, Stopwatch.GetTimestamp()));
        }

        public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum, TimeSpan? timeout = null) => inner.AllReduce(tensor, op, timeout);
        public void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum, TimeSpan? timeout = null) => inner.ReduceScatter(input, output, op, timeout);
        public void Broadcast(Tensor tensor, int root = 0, TimeSpan? timeout = null) => inner.Broadcast(tensor, root, timeout);
        public void Barrier(TimeSpan? timeout = null) => inner.Barrier(timeout);
        public void Abort(string reason) => inner.Abort(reason);
        public void Dispose() { } // the rank harness owns the inner communicator
    }
}
