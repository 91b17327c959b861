using MeLlama.Distributed;
using MeLlama.Distributed.Tests;
using TorchSharp;

namespace MeLlama.Training.Tests.Sharded;

/// <summary>
/// Ranks for the engine tests: one rank runs on the calling thread over the single-process backend (the TCP ring
/// needs two); more run as the Distributed tests' <see cref="LocalCluster"/> (one thread per rank, real loopback TCP).
/// </summary>
static class InProcessRanks
{
    public static void Run(int worldSize, Action<ICollectives> body, TimeSpan? timeout = null)
    {
        if (worldSize == 1)
        {
            using var scope = torch.NewDisposeScope();
            using var single = new SingleProcessCollectives();
            body(single);
            return;
        }
        var options = LocalCluster.Options(timeout ?? TimeSpan.FromSeconds(60)) with { ConnectTimeout = TimeSpan.FromSeconds(30), SegmentBytes = new CollectivesOptions().SegmentBytes };
        LocalCluster.Run(worldSize, body, options, deadline: TimeSpan.FromSeconds(180));
    }
}
