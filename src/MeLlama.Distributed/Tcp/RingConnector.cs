using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using MeLlama.Distributed.Net;
using MeLlama.Distributed.Store;

namespace MeLlama.Distributed.Tcp;

/// <summary>
/// Builds the ring: each rank listens on an ephemeral port, publishes "address:port" in the store, connects
/// to its successor and accepts its predecessor. Both ends authenticate with the job secret, and the
/// connecting side names its rank, so a stray or hostile connection never takes a ring slot.
/// </summary>
static class RingConnector
{
    public static (Socket ToNext, Socket FromPrev) Connect(ProcessGroup group, IPAddress advertise, int socketBufferBytes)
    {
        int rank = group.Rank, world = group.WorldSize;
        int next = (rank + 1) % world, prev = (rank - 1 + world) % world;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(group.AbortToken);
        cts.CancelAfter(group.ConnectTimeout);

        using var listener = new Socket(advertise.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(advertise.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0));
        listener.Listen(16);
        int port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        group.Store.Set(AddressKey(group.Group, rank), Encoding.UTF8.GetBytes($"{advertise}|{port}"));

        var accept = AcceptPredecessorAsync(listener, group, prev, socketBufferBytes, cts.Token);
        var connect = ConnectSuccessorAsync(group, next, socketBufferBytes, cts.Token);
        try
        {
            Task.WaitAll(accept, connect);
            return (connect.Result, accept.Result);
        }
        catch (AggregateException e)
        {
            cts.Cancel();
            if (accept.IsCompletedSuccessfully) accept.Result.Dispose();
            if (connect.IsCompletedSuccessfully) connect.Result.Dispose();
            var root = e.InnerExceptions.FirstOrDefault(x => x is not OperationCanceledException) ?? e.InnerExceptions[0];
            if (group.Notice is { } notice) throw new CollectiveException($"rank {rank} could not join the ring: {notice.Reason}", notice.FailedRank >= 0 ? notice.FailedRank : null, inner: root);
            if (root is OperationCanceledException)
                throw new CollectiveException($"rank {rank} could not build the ring within {group.ConnectTimeout.TotalSeconds:0} s (waiting for rank {(connect.IsCompleted ? prev : next)})", connect.IsCompleted ? prev : next, isTimeout: true, inner: root);
            throw new CollectiveException($"rank {rank} could not build the ring: {root.Message}", inner: root);
        }
    }

    static string AddressKey(string group, int rank) => $"{group}/ring/{rank}";

    static async Task<Socket> ConnectSuccessorAsync(ProcessGroup group, int next, int bufferBytes, CancellationToken ct)
    {
        var published = await Task.Run(() => group.Store.Get(AddressKey(group.Group, next), group.ConnectTimeout), ct).ConfigureAwait(false);
        var parts = Encoding.UTF8.GetString(published).Split('|');
        string description = $"rank {next} at {parts[0]}:{parts[1]}";
        var socket = await TcpStoreClient.ConnectWithRetryAsync(parts[0], int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture), group.ConnectTimeout, description, ct).ConfigureAwait(false);
        try
        {
            SocketIO.Configure(socket, bufferBytes);
            await Handshake.ConnectAsync(socket, group.Secret, "ring:" + group.Group, description, ct).ConfigureAwait(false);
            var hello = new byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(hello, group.Rank);
            await SocketIO.WriteAllAsync(socket, hello, ct).ConfigureAwait(false);
            var ok = new byte[1];
            await SocketIO.ReadExactlyAsync(socket, ok, ct).ConfigureAwait(false);
            if (ok[0] != 1) throw new IOException($"{description} refused rank {group.Rank} as its ring predecessor");
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    static async Task<Socket> AcceptPredecessorAsync(Socket listener, ProcessGroup group, int prev, int bufferBytes, CancellationToken ct)
    {
        while (true)
        {
            var socket = await listener.AcceptAsync(ct).ConfigureAwait(false);
            try
            {
                SocketIO.Configure(socket, bufferBytes);
                using var handshake = CancellationTokenSource.CreateLinkedTokenSource(ct);
                handshake.CancelAfter(TimeSpan.FromSeconds(10));
                await Handshake.AcceptAsync(socket, group.Secret, "ring:" + group.Group, handshake.Token).ConfigureAwait(false);
                var hello = new byte[4];
                await SocketIO.ReadExactlyAsync(socket, hello, handshake.Token).ConfigureAwait(false);
                int claimed = BinaryPrimitives.ReadInt32LittleEndian(hello);
                if (claimed != prev)
                {
                    await SocketIO.WriteAllAsync(socket, new byte[] { 0 }, handshake.Token).ConfigureAwait(false);
                    throw new IOException($"a connection claiming rank {claimed} arrived where rank {prev} was expected");
                }
                await SocketIO.WriteAllAsync(socket, new byte[] { 1 }, handshake.Token).ConfigureAwait(false);
                return socket;
            }
            catch (Exception e) when (!ct.IsCancellationRequested && e is PeerAuthenticationException or IOException or SocketException or OperationCanceledException)
            {
                group.Log.Warning("Rank {Rank} refused a ring connection from {Remote}: {Reason}", group.Rank, socket.RemoteEndPoint, e.Message);
                socket.Dispose();
            }
        }
    }
}
