using System.Buffers.Binary;
using System.Text;

namespace MeLlama.Distributed.Store;

/// <summary>
/// Wire format of the rendezvous store: after the handshake, length-prefixed frames. A request is
/// [command byte][fields]; a reply is [status byte][fields]. Strings are [u16 length][UTF-8], blobs [i32 length][bytes].
/// A connection that sends <see cref="StoreCommand.Join"/> becomes a membership connection: the server
/// pushes the group's abort notice on it and treats its loss without <see cref="StoreCommand.Leave"/> as the death of that rank.
/// </summary>
enum StoreCommand : byte { Set = 1, Get = 2, Add = 3, SetIfAbsent = 4, Join = 5, Leave = 6 }

enum StoreStatus : byte { Ok = 0, Timeout = 1, Error = 2, Abort = 3 }

/// <summary>Appends fields to a frame payload.</summary>
sealed class FrameWriter
{
    readonly MemoryStream stream = new();

    public FrameWriter Byte(byte b) { stream.WriteByte(b); return this; }

    public FrameWriter Int32(int v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(b, v);
        stream.Write(b);
        return this;
    }

    public FrameWriter Int64(long v)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(b, v);
        stream.Write(b);
        return this;
    }

    public FrameWriter String(string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        if (bytes.Length > ushort.MaxValue) throw new ArgumentException("store key too long");
        Span<byte> b = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(b, (ushort)bytes.Length);
        stream.Write(b);
        stream.Write(bytes);
        return this;
    }

    public FrameWriter Blob(ReadOnlySpan<byte> data) { Int32(data.Length); stream.Write(data); return this; }

    public byte[] ToArray() => stream.ToArray();
}

/// <summary>Reads fields from a frame payload; a short or malformed frame raises <see cref="InvalidDataException"/>.</summary>
sealed class FrameReader(byte[] data)
{
    int position;

    public byte Byte() => Take(1)[0];
    public int Int32() => BinaryPrimitives.ReadInt32LittleEndian(Take(4));
    public long Int64() => BinaryPrimitives.ReadInt64LittleEndian(Take(8));
    public string String() => Encoding.UTF8.GetString(Take(BinaryPrimitives.ReadUInt16LittleEndian(Take(2))));

    public byte[] Blob()
    {
        int n = Int32();
        if (n < 0) throw new InvalidDataException("negative blob length");
        return Take(n).ToArray();
    }

    ReadOnlySpan<byte> Take(int n)
    {
        if (n < 0 || position + n > data.Length) throw new InvalidDataException("store frame is shorter than its fields");
        var span = data.AsSpan(position, n);
        position += n;
        return span;
    }
}

/// <summary>What a group's abort key holds: the rank blamed (-1 unknown) and why.</summary>
public sealed record AbortNotice(int FailedRank, string Reason)
{
    public byte[] Encode() => new FrameWriter().Int32(FailedRank).String(Reason.Length > 8000 ? Reason[..8000] : Reason).ToArray();

    public static AbortNotice Decode(byte[] data)
    {
        try
        {
            var r = new FrameReader(data);
            return new AbortNotice(r.Int32(), r.String());
        }
        catch (InvalidDataException) { return new AbortNotice(-1, Encoding.UTF8.GetString(data)); }
    }

    public static string Key(string group) => $"{group}/__abort__";
}
