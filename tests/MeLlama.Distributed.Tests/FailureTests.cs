using System.Diagnostics;
using static TorchSharp.torch;

namespace MeLlama.Distributed.Tests;

/// <summary>
/// In-process failure cases: a rank that stops answering or leaves makes the others fail within the
/// timeout, with a message naming it, and no thread hangs. (Killed processes: see ProcessTests.)
/// </summary>
public class FailureTests
{
    [Fact]
    public void RankThatNeverJoinsACollectiveTimesOutNamingIt()
    {
        var timeout = TimeSpan.FromSeconds(1.5);
        var clock = Stopwatch.StartNew();
        var failedAt = new TimeSpan[2];
        var errors = LocalCluster.RunCollectingErrors(2, comm =>
        {
            var t = ones(100);
            comm.AllReduce(t);
            if (comm.Rank == 1) Thread.Sleep(timeout * 3); // hung (still connected, not calling)
            try { comm.AllReduce(t); }
            finally { failedAt[comm.Rank] = clock.Elapsed; }
        }, LocalCluster.Options(timeout));

        var e0 = Assert.IsType<CollectiveException>(errors[0]);
        Assert.Equal(1, e0.FailedRank);
        Assert.True(e0.IsTimeout);
        Assert.Contains("rank 1", e0.Message);
        Assert.Contains("timed out", e0.Message);
        Assert.True(failedAt[0] < timeout * 2 + TimeSpan.FromSeconds(1), $"rank 0 failed only after {failedAt[0]}");
        // The late rank learns why at its next call instead of waiting out its own timeout.
        var e1 = Assert.IsType<CollectiveException>(errors[1]);
        Assert.Equal(1, e1.FailedRank);
        Assert.True(failedAt[1] - timeout * 3 < TimeSpan.FromSeconds(1), "the late rank should fail at once");
    }

    [Fact]
    public void ThreeRanksBlameTheRankThatIsMissingNotItsNeighbour()
    {
        var timeout = TimeSpan.FromSeconds(1.5);
        var errors = LocalCluster.RunCollectingErrors(3, comm =>
        {
            var t = ones(1000);
            comm.AllReduce(t);
            if (comm.Rank == 2) Thread.Sleep(timeout * 4);
            comm.AllReduce(t);
        }, LocalCluster.Options(timeout));
        foreach (var e in errors)
        {
            var c = Assert.IsType<CollectiveException>(e);
            Assert.Equal(2, c.FailedRank);
        }
    }

    [Fact]
    public void RankThatLeavesMakesTheOthersFailPromptlyNamingIt()
    {
        var clock = Stopwatch.StartNew();
        TimeSpan failedAt = default;
        var errors = LocalCluster.RunCollectingErrors(3, comm =>
        {
            var t = ones(10);
            comm.AllReduce(t);
            if (comm.Rank == 1) return; // leaves: its communicator is disposed, its sockets close
            try { comm.AllReduce(t); }
            finally { if (comm.Rank == 0) failedAt = clock.Elapsed; }
        }, LocalCluster.Options(TimeSpan.FromSeconds(60)));
        Assert.Null(errors[1]);
        foreach (var rank in new[] { 0, 2 })
        {
            var c = Assert.IsType<CollectiveException>(errors[rank]);
            Assert.Equal(1, c.FailedRank);
            Assert.Contains("rank 1", c.Message);
        }
        Assert.True(failedAt < TimeSpan.FromSeconds(15), $"took {failedAt} (the timeout was 60 s)");
    }

    [Fact]
    public void AbortReachesEveryRankWithItsReason()
    {
        var errors = LocalCluster.RunCollectingErrors(3, comm =>
        {
            var t = ones(10);
            comm.AllReduce(t);
            if (comm.Rank == 2)
            {
                comm.Abort("loss became NaN at step 120");
                return;
            }
            comm.AllReduce(t);
        }, LocalCluster.Options(TimeSpan.FromSeconds(60)));
        foreach (var rank in new[] { 0, 1 })
        {
            var c = Assert.IsType<CollectiveException>(errors[rank]);
            Assert.Equal(2, c.FailedRank);
            Assert.Contains("loss became NaN at step 120", c.Message);
        }
    }

    [Fact]
    public void CommunicatorStaysFailedAfterAFailure()
    {
        var errors = LocalCluster.RunCollectingErrors(2, comm =>
        {
            var t = ones(10);
            if (comm.Rank == 1) { comm.Abort("test"); return; }
            Assert.Throws<CollectiveException>(() => comm.AllReduce(t));
            var again = Assert.Throws<CollectiveException>(() => comm.Barrier());
            Assert.Contains("failed earlier", again.Message);
        }, LocalCluster.Options(TimeSpan.FromSeconds(30)));
        Assert.All(errors, Assert.Null);
    }
}
