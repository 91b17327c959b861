using System.Net;
using MeLlama.Distributed;
using MeLlama.Distributed.Store;
using MeLlama.Distributed.Tcp;
using TorchSharp;

namespace MeLlama.Training.Tests.Sharded;

/// <summary>One rank per thread (one rank: the single-process backend on the calling thread), each with its own TCP communicator over loopback and a shared authenticated store.</summary>
static class InProcessRanks
{
    public static void Run(int worldSize, Action<ICollectives> body, TimeSpan? timeout = null)
    {
        if (worldSize == 1)
        {
            // The TCP ring needs two ranks; one rank runs on the calling thread over the single-process backend.
            using var scope = torch.NewDisposeScope();
            using var single = new SingleProcessCollectives();
            body(single);
            return;
        }
        var options = new CollectivesOptions
        {
            Timeout = timeout ?? TimeSpan.FromSeconds(60),
            ConnectTimeout = TimeSpan.FromSeconds(30),
            Group = "fsdp-test-" + Guid.NewGuid().ToString("N"),
        };
        var (secret, _) = JobSecret.Generate();
        using var server = TcpStoreServer.Start(IPAddress.Loopback, 0, secret);
        var errors = new Exception?[worldSize];
        var threads = Enumerable.Range(0, worldSize).Select(rank => new Thread(() =>
        {
            try
            {
                using var scope = torch.NewDisposeScope();
                var group = ProcessGroup.Join("127.0.0.1", server.EndPoint.Port, secret, options.Group, rank, worldSize, options.ConnectTimeout);
                using var comm = TcpCollectives.Connect(group, options);
                body(comm);
            }
            catch (Exception e) { errors[rank] = e; }
        }) { IsBackground = true, Name = $"fsdp-rank-{rank}" }).ToArray();
        foreach (var t in threads) t.Start();
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(180);
        for (int r = 0; r < worldSize; r++)
        {
            var left = until - DateTime.UtcNow;
            if (left < TimeSpan.Zero || !threads[r].Join(left)) throw new TimeoutException($"rank {r} hung");
        }
        var failed = errors.Where(e => e != null).ToList();
        if (failed.Count > 0) throw new AggregateException("ranks failed", failed!);
    }
}
