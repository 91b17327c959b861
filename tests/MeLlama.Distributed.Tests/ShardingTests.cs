using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Distributed.Tests;

/// <summary>The pieces an FSDP-style engine builds on: shard layouts, tensor addresses, and the flat-buffer round trip.</summary>
public class ShardingTests
{
    [Theory]
    [InlineData(10, 3, 1, 4, 2)]
    [InlineData(12, 3, 1, 4, 0)]
    [InlineData(1, 4, 1, 1, 3)]
    [InlineData(0, 2, 1, 0, 0)]
    [InlineData(100, 3, 16, 48, 44)]
    public void ShardLayoutPadsToEqualShards(long numel, int world, int align, long shard, long padding)
    {
        var layout = ShardLayout.For(numel, world, align);
        Assert.Equal(shard, layout.ShardNumel);
        Assert.Equal(padding, layout.Padding);
        Assert.Equal(0, layout.ShardNumel % align);
        Assert.Equal(numel, Enumerable.Range(0, world).Sum(r => layout.ValidNumel(r)));
        for (int r = 0; r < world; r++) Assert.Equal(r * shard, layout.ShardOffset(r));
        Assert.Throws<ArgumentOutOfRangeException>(() => layout.ShardOffset(world));
    }

    [Fact]
    public void DataPointerAccountsForStorageOffsetInEveryDType()
    {
        using var scope = NewDisposeScope();
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float64, ScalarType.Int64, ScalarType.Bool })
        {
            var flat = zeros(64, dtype: dtype);
            var slice = flat.narrow(0, 5, 20);
            long e = flat.ElementSize;
            Assert.Equal(TensorMemory.DataPointer(flat) + (nint)(5 * e), TensorMemory.DataPointer(slice));
            unsafe
            {
                fixed (byte* p = flat.bytes) Assert.Equal((IntPtr)p, TensorMemory.DataPointer(flat));
            }
            Assert.Equal(20 * e, TensorMemory.ByteCount(slice));
        }
        Assert.Throws<ArgumentException>(() => TensorMemory.DataPointer(ones(3, 3).t()));
        Assert.Equal(IntPtr.Zero, TensorMemory.DataPointer(empty(0)));
    }

    [Fact]
    public void SingleProcessCollectivesAreIdentitiesWithTheSameChecks()
    {
        using var scope = NewDisposeScope();
        using var comm = new SingleProcessCollectives();
        var t = arange(5, dtype: ScalarType.Float32);
        comm.AllReduce(t, ReduceOp.Avg);
        Assert.Equal(new float[] { 0, 1, 2, 3, 4 }, t.data<float>().ToArray());
        var output = zeros(5);
        comm.ReduceScatter(t, output);
        comm.AllGather(output, t);
        Assert.Equal(new float[] { 0, 1, 2, 3, 4 }, output.data<float>().ToArray());
        comm.Broadcast(t);
        comm.Barrier();
        Assert.Throws<ArgumentException>(() => comm.ReduceScatter(ones(4), ones(2)));
        Assert.Throws<ArgumentOutOfRangeException>(() => comm.Broadcast(t, root: 1));
        Assert.Throws<ArgumentException>(() => comm.AllReduce(ones(2, 2).t()));
    }

    /// <summary>
    /// The FSDP cycle on 3 ranks with a parameter count that does not divide by 3: pad, reduce-scatter the
    /// full gradient buffer into each rank's shard in place (average), update the shard, all-gather the
    /// parameters back in place. Every rank ends with the same full parameters, equal to a direct computation.
    /// </summary>
    [Fact]
    public void FlatBufferRoundTripWithPaddingOnThreeRanks()
    {
        const int world = 3;
        const long numel = 1001;
        var layout = ShardLayout.For(numel, world, alignElements: 4);
        var results = new float[world][];
        LocalCluster.Run(world, comm =>
        {
            var parameters = zeros(layout.PaddedNumel);
            parameters.narrow(0, 0, numel).copy_(arange(numel, dtype: ScalarType.Float32) / 100);
            var grads = zeros(layout.PaddedNumel);
            grads.narrow(0, 0, numel).copy_(full(numel, comm.Rank + 1f)); // rank r's gradient is r + 1 everywhere

            long offset = layout.ShardOffset(comm.Rank);
            var gradShard = grads.narrow(0, offset, layout.ShardNumel);
            comm.ReduceScatter(grads, gradShard, ReduceOp.Avg);
            var paramShard = parameters.narrow(0, offset, layout.ShardNumel);
            paramShard.sub_(gradShard * 0.5f); // SGD with lr 0.5 on the owned shard only
            comm.AllGather(paramShard, parameters);
            results[comm.Rank] = parameters.narrow(0, 0, numel).data<float>().ToArray();
        });
        // Mean gradient over ranks is (1 + 2 + 3) / 3 = 2, so every parameter moved by -1.
        var expected = Enumerable.Range(0, (int)numel).Select(i => i / 100f - 1f).ToArray();
        foreach (var r in results) Assert.Equal(expected, r, (a, b) => Math.Abs(a - b) < 1e-6);
    }
}
