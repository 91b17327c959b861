using MeLlama.Distributed;
using MeLlama.Training.Planning;
using MeLlama.Training.Tests.Sharded;
using static TorchSharp.torch;

namespace MeLlama.Training.Tests.Planning;

public class TimedCollectivesTests
{
    [Fact]
    public void Forwards_every_call_and_counts_calls_bytes_and_time_per_operation()
    {
        var totals = new IReadOnlyList<TimedCollectives.OpTotals>[2];
        var gathered = new float[2][];
        var reduced = new float[2][];
        InProcessRanks.Run(2, inner =>
        {
            var comm = new TimedCollectives(inner); // the helper disposes the inner communicator
            using var scope = NewDisposeScope();
            var mine = full(3, (float)(comm.Rank + 1));
            var all = empty(6);
            comm.AllGather(mine, all);
            var sum = full(4, 1f);
            comm.AllReduce(sum);
            comm.AllReduce(sum);
            var slice = empty(2);
            comm.ReduceScatter(arange(4, dtype: ScalarType.Float32), slice);
            comm.Barrier();
            gathered[comm.Rank] = all.data<float>().ToArray();
            reduced[comm.Rank] = sum.data<float>().ToArray();
            totals[comm.Rank] = comm.Totals;
            Assert.True(comm.Total > TimeSpan.Zero);
            comm.Reset();
            Assert.Empty(comm.Totals);
        });
        for (int r = 0; r < 2; r++)
        {
            Assert.Equal([1f, 1, 1, 2, 2, 2], gathered[r]);
            Assert.Equal([4f, 4, 4, 4], reduced[r]); // 1+1, then 2+2
            var byOp = totals[r].ToDictionary(t => t.Op);
            Assert.Equal((1L, 24L), (byOp["all_gather"].Calls, byOp["all_gather"].Bytes));
            Assert.Equal((2L, 32L), (byOp["all_reduce"].Calls, byOp["all_reduce"].Bytes));
            Assert.Equal((1L, 16L), (byOp["reduce_scatter"].Calls, byOp["reduce_scatter"].Bytes));
            Assert.Equal(1L, byOp["barrier"].Calls);
        }
    }
}
