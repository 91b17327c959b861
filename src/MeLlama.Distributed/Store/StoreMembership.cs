using System.Net.Sockets;
using MeLlama.Distributed.Net;

namespace MeLlama.Distributed.Store;

/// <summary>
/// This rank's membership connection to the store: registers the rank in its group, reports the group's
/// abort notice (set by the store when a member dies, or by a rank whose collective failed) through
/// <c>onAbort</c>, and reports the loss of the store itself (rank 0 died) the same way.
/// Disposing says goodbye, which tells the store this rank ended normally.
/// </summary>
public sealed class StoreMembership : IDisposable
{
    readonly TcpStoreClient connection;
    readonly Action<AbortNotice> onAbort;
    readonly Task listener;
    readonly CancellationTokenSource closing = new();
    int disposed;

    StoreMembership(TcpStoreClient connection, Action<AbortNotice> onAbort)
    {
        this.connection = connection;
        this.onAbort = onAbort;
        listener = Task.Run(ListenAsync);
    }

    public static StoreMembership Join(string host, int port, JobSecret secret, string group, int rank, TimeSpan connectTimeout, Action<AbortNotice> onAbort)
    {
        var connection = TcpStoreClient.Connect(host, port, secret, connectTimeout);
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            var join = new FrameWriter().Byte((byte)StoreCommand.Join).String(group).Int32(rank).String(Environment.MachineName).Int32(Environment.ProcessId).ToArray();
            SocketIO.WriteFrameAsync(connection.Socket, join, cts.Token).AsTask().GetAwaiter().GetResult();
            var reply = SocketIO.ReadFrameAsync(connection.Socket, cts.Token).AsTask().GetAwaiter().GetResult();
            if (reply.Length < 1 || reply[0] != (byte)StoreStatus.Ok) throw new IOException($"{connection.Description} refused rank {rank}'s membership");
        }
        catch
        {
            connection.Dispose();
            throw;
        }
        return new StoreMembership(connection, onAbort);
    }

    async Task ListenAsync()
    {
        try
        {
            var frame = await SocketIO.ReadFrameAsync(connection.Socket, closing.Token).ConfigureAwait(false);
            var reader = new FrameReader(frame);
            if ((StoreStatus)reader.Byte() == StoreStatus.Abort) onAbort(AbortNotice.Decode(reader.Blob()));
        }
        catch (Exception e) when (e is EndOfStreamException or SocketException or IOException or InvalidDataException or OperationCanceledException or ObjectDisposedException)
        {
            if (Volatile.Read(ref disposed) == 0)
                onAbort(new AbortNotice(0, $"lost the connection to {connection.Description}: rank 0 died, was killed, or its host is unreachable"));
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0) return;
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            SocketIO.WriteFrameAsync(connection.Socket, new[] { (byte)StoreCommand.Leave }, cts.Token).AsTask().GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is SocketException or IOException or OperationCanceledException or ObjectDisposedException) { }
        closing.Cancel();
        connection.Dispose();
        try { listener.Wait(TimeSpan.FromSeconds(5)); } catch (AggregateException) { }
    }
}
