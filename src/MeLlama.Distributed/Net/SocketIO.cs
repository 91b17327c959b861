using System.Buffers.Binary;
using System.Net.Sockets;

namespace MeLlama.Distributed.Net;

/// <summary>Exact-length reads and small framed messages over a connected TCP socket.</summary>
static class SocketIO
{
    /// <summary>Largest store frame accepted; larger means a corrupt or hostile peer.</summary>
    public const int MaxFrameBytes = 64 << 20;

    public static async ValueTask ReadExactlyAsync(Socket socket, Memory<byte> buffer, CancellationToken ct)
    {
        while (buffer.Length > 0)
        {
            int n = await socket.ReceiveAsync(buffer, SocketFlags.None, ct).ConfigureAwait(false);
            if (n == 0) throw new EndOfStreamException("the peer closed the connection");
            buffer = buffer[n..];
        }
    }

    public static async ValueTask WriteAllAsync(Socket socket, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        while (data.Length > 0)
        {
            int n = await socket.SendAsync(data, SocketFlags.None, ct).ConfigureAwait(false);
            data = data[n..];
        }
    }

    public static async ValueTask WriteFrameAsync(Socket socket, ReadOnlyMemory<byte> payload, CancellationToken ct)
    {
        var frame = new byte[4 + payload.Length];
        BinaryPrimitives.WriteInt32LittleEndian(frame, payload.Length);
        payload.CopyTo(frame.AsMemory(4));
        await WriteAllAsync(socket, frame, ct).ConfigureAwait(false);
    }

    public static async ValueTask<byte[]> ReadFrameAsync(Socket socket, CancellationToken ct)
    {
        var header = new byte[4];
        await ReadExactlyAsync(socket, header, ct).ConfigureAwait(false);
        int length = BinaryPrimitives.ReadInt32LittleEndian(header);
        if (length < 0 || length > MaxFrameBytes) throw new InvalidDataException($"frame of {length} bytes is out of range");
        var payload = new byte[length];
        await ReadExactlyAsync(socket, payload, ct).ConfigureAwait(false);
        return payload;
    }

    public static void Configure(Socket socket, int bufferBytes = 0)
    {
        socket.NoDelay = true;
        if (bufferBytes > 0)
        {
            socket.SendBufferSize = bufferBytes;
            socket.ReceiveBufferSize = bufferBytes;
        }
    }
}
