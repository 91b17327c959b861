using System.Net;
using MeLlama.Distributed.Store;
using MeLlama.Distributed.Tcp;
using TorchSharp;

namespace MeLlama.Distributed.Tests;

/// <summary>
/// Runs one rank per thread in this process, each with its own TCP communicator over real loopback
/// sockets and a shared authenticated store: the production code path minus process boundaries.
/// </summary>
static class LocalCluster
{
    public static CollectivesOptions Options(TimeSpan? timeout = null, int segmentBytes = 4096) => new()
    {
        Timeout = timeout ?? TimeSpan.FromSeconds(30),
        ConnectTimeout = TimeSpan.FromSeconds(20),
        SegmentBytes = segmentBytes,
        Group = "test-" + Guid.NewGuid().ToString("N"),
    };

    /// <summary>Runs <paramref name="body"/> on every rank; rethrows the first rank's exception; fails if a rank hangs.</summary>
    public static void Run(int worldSize, Action<ICollectives> body, CollectivesOptions? options = null, TimeSpan? deadline = null)
    {
        var errors = RunCollectingErrors(worldSize, body, options, deadline);
        var first = errors.FirstOrDefault(e => e != null);
        if (first != null) throw new AggregateException($"rank {Array.IndexOf(errors, first)} failed", errors.Where(e => e != null)!);
    }

    /// <summary>Runs <paramref name="body"/> on every rank and returns each rank's exception (null where it succeeded).</summary>
    public static Exception?[] RunCollectingErrors(int worldSize, Action<ICollectives> body, CollectivesOptions? options = null, TimeSpan? deadline = null)
    {
        options ??= Options();
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
        }) { IsBackground = true, Name = $"rank-{rank}" }).ToArray();
        foreach (var t in threads) t.Start();
        var until = DateTime.UtcNow + (deadline ?? TimeSpan.FromSeconds(120));
        foreach (var (t, rank) in threads.Select((t, i) => (t, i)))
        {
            var left = until - DateTime.UtcNow;
            if (left < TimeSpan.Zero || !t.Join(left)) throw new TimeoutException($"rank {rank} hung");
        }
        return errors;
    }
}
