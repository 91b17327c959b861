using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Distributed.Tests;

/// <summary>
/// Ring collectives on 2 and 3 ranks (threads with real loopback sockets) against a direct computation
/// over all ranks' inputs. Inputs are small integers so that every dtype (bf16 included) sums exactly and
/// results can be compared bit for bit; a separate test covers rounding with random fp32/bf16 data.
/// </summary>
public class TcpCollectivesTests
{
    static readonly ScalarType[] ReducibleTypes = [ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float64, ScalarType.Int64, ScalarType.Float16, ScalarType.Int32];
    static readonly ReduceOp[] Ops = [ReduceOp.Sum, ReduceOp.Avg, ReduceOp.Max, ReduceOp.Min];

    public static TheoryData<int, ScalarType> WorldsAndTypes()
    {
        var data = new TheoryData<int, ScalarType>();
        foreach (int w in new[] { 2, 3 })
            foreach (var t in ReducibleTypes) data.Add(w, t);
        return data;
    }

    /// <summary>Rank <paramref name="rank"/>'s input: integers in [-8, 8], different per rank, size and salt.</summary>
    static Tensor Input(int rank, long n, ScalarType dtype, int salt = 0)
    {
        var random = new Random(HashCode.Combine(rank, n, salt));
        var values = new double[n];
        for (long i = 0; i < n; i++) values[i] = random.Next(-8, 9);
        return tensor(values).to(dtype);
    }

    static Tensor Expected(int world, long n, ScalarType dtype, ReduceOp op, int salt = 0)
    {
        // Reduced in float64, where sums of small integers are exact, then cast like the backends do.
        var all = Enumerable.Range(0, world).Select(r => Input(r, n, ScalarType.Float64, salt)).ToArray();
        var sum = all.Aggregate((a, b) => a + b);
        return op switch
        {
            ReduceOp.Sum => sum.to(dtype),
            ReduceOp.Avg => dtype is ScalarType.Int64 or ScalarType.Int32
                ? sum.to(dtype).div(world, RoundingMode.trunc)
                : sum.to(dtype).div(world),
            ReduceOp.Max => all.Aggregate(maximum).to(dtype),
            _ => all.Aggregate(minimum).to(dtype),
        };
    }

    static void AssertSame(Tensor expected, Tensor actual, string what) =>
        Assert.True(expected.to(ScalarType.Float64).SameAs(actual.to(ScalarType.Float64)), $"{what}: expected {Show(expected)} got {Show(actual)}");

    static string Show(Tensor t) => string.Join(",", t.to(ScalarType.Float64).data<double>().Take(12).Select(v => v.ToString(System.Globalization.CultureInfo.InvariantCulture)));

    [Theory]
    [MemberData(nameof(WorldsAndTypes))]
    public void AllReduceMatchesDirectReduction(int world, ScalarType dtype)
    {
        LocalCluster.Run(world, comm =>
        {
            foreach (var op in Ops)
                foreach (long n in new long[] { 1, 2, 7, 1000, 3001 })
                {
                    using var scope = NewDisposeScope();
                    var t = Input(comm.Rank, n, dtype);
                    comm.AllReduce(t, op);
                    AssertSame(Expected(world, n, dtype, op), t, $"rank {comm.Rank} all_reduce {op} n={n}");
                }
        });
    }

    [Theory]
    [MemberData(nameof(WorldsAndTypes))]
    public void ReduceScatterGivesEachRankItsReducedSlice(int world, ScalarType dtype)
    {
        LocalCluster.Run(world, comm =>
        {
            foreach (var op in Ops)
                foreach (long n in new long[] { 1, 5, 1001 })
                {
                    using var scope = NewDisposeScope();
                    var input = Input(comm.Rank, world * n, dtype);
                    var before = input.clone();
                    var output = full(n, 99, dtype: dtype);
                    comm.ReduceScatter(input, output, op);
                    var expected = Expected(world, world * n, dtype, op).narrow(0, comm.Rank * n, n);
                    AssertSame(expected, output, $"rank {comm.Rank} reduce_scatter {op} n={n}");
                    AssertSame(before, input, "reduce_scatter must not modify its input");

                    // In place: the output is this rank's slice of the input, as in an FSDP flat gradient buffer.
                    comm.ReduceScatter(input, input.narrow(0, comm.Rank * n, n), op);
                    AssertSame(expected, input.narrow(0, comm.Rank * n, n), $"rank {comm.Rank} in-place reduce_scatter {op} n={n}");
                }
        });
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void AllGatherConcatenatesRankSlicesInRankOrder(int world)
    {
        LocalCluster.Run(world, comm =>
        {
            foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Int64, ScalarType.Bool, ScalarType.Byte })
                foreach (long n in new long[] { 1, 5, 1001 })
                {
                    using var scope = NewDisposeScope();
                    var expected = cat(Enumerable.Range(0, world).Select(r => Input(r, n, ScalarType.Float64, salt: 3).to(dtype)).ToArray());
                    var output = zeros(world * n, dtype: dtype);
                    comm.AllGather(Input(comm.Rank, n, ScalarType.Float64, salt: 3).to(dtype), output);
                    AssertSame(expected, output, $"rank {comm.Rank} all_gather {dtype} n={n}");

                    // In place: this rank's shard already sits in its slice of the flat buffer.
                    var flat = zeros(world * n, dtype: dtype);
                    flat.narrow(0, comm.Rank * n, n).copy_(Input(comm.Rank, n, ScalarType.Float64, salt: 3).to(dtype));
                    comm.AllGather(flat.narrow(0, comm.Rank * n, n), flat);
                    AssertSame(expected, flat, $"rank {comm.Rank} in-place all_gather {dtype} n={n}");
                }
        });
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void BroadcastCopiesTheRootsTensorToEveryRank(int world)
    {
        LocalCluster.Run(world, comm =>
        {
            for (int root = 0; root < world; root++)
                foreach (long n in new long[] { 0, 1, 3001 })
                    foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Bool })
                    {
                        using var scope = NewDisposeScope();
                        var t = Input(comm.Rank, n, ScalarType.Float64, salt: 11).to(dtype);
                        comm.Broadcast(t, root);
                        AssertSame(Input(root, n, ScalarType.Float64, salt: 11).to(dtype), t, $"rank {comm.Rank} broadcast from {root} n={n}");
                    }
        });
    }

    [Fact]
    public void RandomFloatsReduceWithinRoundingAndIdenticallyOnAllRanks()
    {
        const int world = 3, n = 100_003;
        var results = new Tensor[world];
        LocalCluster.Run(world, comm =>
        {
            foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            {
                var t = Random(comm.Rank, n).to(dtype);
                comm.AllReduce(t, ReduceOp.Sum);
                if (dtype == ScalarType.BFloat16) results[comm.Rank] = t.to(ScalarType.Float64).MoveToOuterDisposeScope();
                var exact = Enumerable.Range(0, world).Select(r => Random(r, n).to(dtype).to(ScalarType.Float64)).Aggregate((a, b) => a + b);
                // Ring sums round after each hop: at most (W-1) roundings of the dtype's relative precision.
                double unit = dtype == ScalarType.Float32 ? Math.Pow(2, -24) : Math.Pow(2, -8);
                var bound = (world - 1) * unit * Enumerable.Range(0, world).Select(r => Random(r, n).to(dtype).to(ScalarType.Float64).abs()).Aggregate((a, b) => a + b) * 2;
                Assert.True((t.to(ScalarType.Float64) - exact).abs().le(bound + 1e-30).all().item<bool>(), $"{dtype} sum outside rounding bound");
            }
        }, LocalCluster.Options(segmentBytes: 1 << 20));
        for (int r = 1; r < world; r++) Assert.True(results[0].SameAs(results[r]), $"rank {r}'s result differs from rank 0's");

        static Tensor Random(int rank, int n)
        {
            var g = new Random(rank + 1);
            return tensor(Enumerable.Range(0, n).Select(_ => g.NextDouble() * 2 - 1).ToArray());
        }
    }

    [Fact]
    public void OperatesOnlyOnTheGivenSliceOfALargerBuffer()
    {
        LocalCluster.Run(2, comm =>
        {
            var flat = full(100, comm.Rank + 1.0f);
            comm.AllReduce(flat.narrow(0, 10, 30), ReduceOp.Sum);
            var values = flat.data<float>().ToArray();
            Assert.All(values.Take(10), v => Assert.Equal(comm.Rank + 1.0f, v));
            Assert.All(values.Skip(10).Take(30), v => Assert.Equal(3.0f, v));
            Assert.All(values.Skip(40), v => Assert.Equal(comm.Rank + 1.0f, v));
        });
    }

    [Fact]
    public void BarrierWaitsForTheLastRank()
    {
        var exits = new DateTime[3];
        DateTime lateArrival = default;
        LocalCluster.Run(3, comm =>
        {
            comm.Barrier();
            if (comm.Rank == 2)
            {
                Thread.Sleep(400);
                lateArrival = DateTime.UtcNow;
            }
            comm.Barrier();
            exits[comm.Rank] = DateTime.UtcNow;
        });
        Assert.All(exits, t => Assert.True(t >= lateArrival, "a rank left the barrier before the last rank entered it"));
    }

    [Fact]
    public void MismatchedCollectivesFailOnEveryRankWithBothOperationsNamed()
    {
        var errors = LocalCluster.RunCollectingErrors(2, comm =>
        {
            var t = ones(8);
            if (comm.Rank == 0) comm.AllReduce(t);
            else comm.Broadcast(t, 0);
        });
        Assert.All(errors, e => Assert.IsType<CollectiveException>(e));
        Assert.Contains(errors, e => e!.Message.Contains("all_reduce") && e.Message.Contains("broadcast"));
    }

    [Fact]
    public void ArgumentErrorsAreCaughtBeforeAnythingIsSent()
    {
        LocalCluster.Run(2, comm =>
        {
            Assert.Throws<ArgumentException>(() => comm.ReduceScatter(ones(5), ones(2)));
            Assert.Throws<ArgumentException>(() => comm.AllGather(ones(2), ones(5)));
            Assert.Throws<ArgumentException>(() => comm.AllReduce(ones(4, 4).t()));
            Assert.Throws<ArgumentException>(() => comm.AllReduce(ones(4, dtype: ScalarType.Bool)));
            Assert.Throws<ArgumentException>(() => comm.ReduceScatter(ones(4), ones(2, dtype: ScalarType.Float64)));
            Assert.Throws<ArgumentOutOfRangeException>(() => comm.Broadcast(ones(2), root: 2));
            var flat = ones(4);
            Assert.Throws<ArgumentException>(() => comm.AllGather(flat.narrow(0, 1 - comm.Rank, 2), flat)); // overlaps but not own slice
            // The ring is still usable afterwards.
            var t = ones(3);
            comm.AllReduce(t);
            Assert.Equal(2f, t[0].item<float>());
        });
    }
}
