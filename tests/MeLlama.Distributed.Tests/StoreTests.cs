using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using MeLlama.Distributed.Store;

namespace MeLlama.Distributed.Tests;

public class StoreTests
{
    static readonly TimeSpan Connect = TimeSpan.FromSeconds(10);

    [Fact]
    public void SetGetAddAndSetIfAbsentWorkAcrossClients()
    {
        var (secret, _) = JobSecret.Generate();
        using var server = TcpStoreServer.Start(IPAddress.Loopback, 0, secret);
        using var a = TcpStoreClient.Connect("127.0.0.1", server.EndPoint.Port, secret, Connect);
        using var b = TcpStoreClient.Connect("localhost", server.EndPoint.Port, secret, Connect);

        a.Set("k", "v1"u8);
        Assert.Equal("v1", Encoding.UTF8.GetString(b.Get("k", TimeSpan.FromSeconds(1))));
        Assert.Equal(3, a.Add("n", 3));
        Assert.Equal(1, b.Add("n", -2));
        var (set, current) = a.SetIfAbsent("once", "first"u8);
        Assert.True(set);
        (set, current) = b.SetIfAbsent("once", "second"u8);
        Assert.False(set);
        Assert.Equal("first", Encoding.UTF8.GetString(current));
    }

    [Fact]
    public async Task GetWaitsForALaterSetAndTimesOutOtherwise()
    {
        var (secret, _) = JobSecret.Generate();
        using var server = TcpStoreServer.Start(IPAddress.Loopback, 0, secret);
        using var reader = TcpStoreClient.Connect("127.0.0.1", server.EndPoint.Port, secret, Connect);
        using var writer = TcpStoreClient.Connect("127.0.0.1", server.EndPoint.Port, secret, Connect);

        var pending = Task.Run(() => reader.Get("late", TimeSpan.FromSeconds(10)));
        Thread.Sleep(200);
        Assert.False(pending.IsCompleted);
        writer.Set("late", [42]);
        Assert.Equal([42], await pending);

        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<TimeoutException>(() => reader.Get("never", TimeSpan.FromMilliseconds(300)));
        Assert.Contains("'never'", e.Message);
        Assert.InRange(clock.Elapsed.TotalSeconds, 0.25, 5);
    }

    [Fact]
    public void ClientWithTheWrongSecretIsRejectedAndTheStoreKeepsServing()
    {
        var (secret, _) = JobSecret.Generate();
        var (wrong, _) = JobSecret.Generate();
        using var server = TcpStoreServer.Start(IPAddress.Loopback, 0, secret);
        using var member = TcpStoreClient.Connect("127.0.0.1", server.EndPoint.Port, secret, Connect);
        member.Set("nccl-id", [1, 2, 3]);

        var e = Assert.Throws<PeerAuthenticationException>(() => TcpStoreClient.Connect("127.0.0.1", server.EndPoint.Port, wrong, Connect));
        Assert.Contains("rejected this process's job secret", e.Message);

        Assert.Equal([1, 2, 3], member.Get("nccl-id", TimeSpan.FromSeconds(1)));
    }

    [Fact]
    public void ClientRefusesAServerThatDoesNotKnowTheSecret()
    {
        // An impostor that speaks the protocol but accepts anyone: it cannot produce the server's proof.
        var (secret, _) = JobSecret.Generate();
        var (other, _) = JobSecret.Generate();
        using var impostor = TcpStoreServer.Start(IPAddress.Loopback, 0, other);
        var e = Assert.Throws<PeerAuthenticationException>(() => TcpStoreClient.Connect("127.0.0.1", impostor.EndPoint.Port, secret, Connect));
        Assert.Contains("job secret", e.Message);
    }

    [Fact]
    public void RawConnectionWithoutHandshakeGetsNothing()
    {
        var (secret, _) = JobSecret.Generate();
        using var server = TcpStoreServer.Start(IPAddress.Loopback, 0, secret);
        using var member = TcpStoreClient.Connect("127.0.0.1", server.EndPoint.Port, secret, Connect);
        member.Set("key", [7]);

        using var raw = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        raw.Connect(IPAddress.Loopback, server.EndPoint.Port);
        // A GET request sent without answering the challenge (padded to the 64 bytes of an answer): the
        // server reads it as a wrong answer and hangs up.
        var frame = new FrameWriter().Int32(14).Byte(2).String("key").Int64(1000).ToArray();
        var attempt = new byte[64];
        frame.CopyTo(attempt, 0);
        raw.Send(attempt);
        raw.ReceiveTimeout = 5000;
        var buffer = new byte[256];
        int total = 0, n;
        while ((n = raw.Receive(buffer, total, buffer.Length - total, SocketFlags.None)) > 0) total += n;
        // What came back is the 37-byte challenge and the 1-byte refusal, never the value.
        Assert.Equal(38, total);
        Assert.Equal(0, buffer[37]);
    }

    [Fact]
    public async Task MemberThatDisconnectsWithoutLeavingAbortsTheGroupNamingIt()
    {
        var (secret, _) = JobSecret.Generate();
        using var server = TcpStoreServer.Start(IPAddress.Loopback, 0, secret);
        var seen = new TaskCompletionSource<AbortNotice>();
        using var survivor = StoreMembership.Join("127.0.0.1", server.EndPoint.Port, secret, "g", 0, Connect, n => seen.TrySetResult(n));
        // Rank 1 joins by hand and then "crashes": its socket closes without the Leave message.
        var dying = TcpStoreClient.Connect("127.0.0.1", server.EndPoint.Port, secret, Connect);
        var join = new FrameWriter().Byte((byte)StoreCommand.Join).String("g").Int32(1).String("host-b").Int32(4242).ToArray();
        await Net.SocketIO.WriteFrameAsync(dying.Socket, join, default);
        Assert.Equal((byte)StoreStatus.Ok, (await Net.SocketIO.ReadFrameAsync(dying.Socket, default))[0]);
        dying.Dispose();

        var notice = await seen.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(1, notice.FailedRank);
        Assert.Contains("rank 1 (host host-b, pid 4242)", notice.Reason);
    }

    [Fact]
    public async Task MembersThatLeaveCleanlyDoNotAbort()
    {
        var (secret, _) = JobSecret.Generate();
        using var server = TcpStoreServer.Start(IPAddress.Loopback, 0, secret);
        var seen = new TaskCompletionSource<AbortNotice>();
        using var stays = StoreMembership.Join("127.0.0.1", server.EndPoint.Port, secret, "g", 0, Connect, n => seen.TrySetResult(n));
        StoreMembership.Join("127.0.0.1", server.EndPoint.Port, secret, "g", 1, Connect, _ => { }).Dispose();
        Assert.False(server.WaitForMembersToLeave("g", TimeSpan.FromSeconds(0.1))); // rank 0 is still there
        await Task.Delay(300);
        Assert.False(seen.Task.IsCompleted);
        Assert.Equal(1, server.ConnectedMembers("g"));
    }

    [Fact]
    public async Task LosingTheStoreIsReportedAsRankZero()
    {
        var (secret, _) = JobSecret.Generate();
        var server = TcpStoreServer.Start(IPAddress.Loopback, 0, secret);
        var seen = new TaskCompletionSource<AbortNotice>();
        using var member = StoreMembership.Join("127.0.0.1", server.EndPoint.Port, secret, "g", 1, Connect, n => seen.TrySetResult(n));
        server.Dispose();
        var notice = await seen.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(0, notice.FailedRank);
        Assert.Contains("rank 0", notice.Reason);
    }

    [Fact]
    public void PortInUseIsExplained()
    {
        var (secret, _) = JobSecret.Generate();
        using var first = TcpStoreServer.Start(IPAddress.Loopback, 0, secret);
        var e = Assert.Throws<IOException>(() => TcpStoreServer.Start(IPAddress.Loopback, first.EndPoint.Port, secret));
        Assert.Contains("already in use", e.Message);
    }

    [Fact]
    public void UnreachableStoreTimesOutWithAHint()
    {
        var (secret, _) = JobSecret.Generate();
        int port;
        using (var probe = new TcpListener(IPAddress.Loopback, 0)) { probe.Start(); port = ((IPEndPoint)probe.LocalEndpoint).Port; }
        var e = Assert.Throws<TimeoutException>(() => TcpStoreClient.Connect("127.0.0.1", port, secret, TimeSpan.FromSeconds(1)));
        Assert.Contains("MASTER_ADDR", e.Message);
    }
}
