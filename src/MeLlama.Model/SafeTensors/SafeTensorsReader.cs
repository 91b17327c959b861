using MeLlama.Core.IO;
using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>
/// Reads tensors from one safetensors file, one at a time, straight from disk into their destination:
/// when the destination is a contiguous CPU tensor of the stored dtype the bytes land in its memory with no
/// copy; otherwise they pass through a bounded staging buffer (<see cref="StagingBytes"/>) that converts
/// dtype and moves to the device. Loading a model therefore never needs twice its size in memory.
/// </summary>
public sealed class SafeTensorsReader : IDisposable
{
    /// <summary>Upper bound on the temporary buffer used for conversion or device transfer.</summary>
    public const long StagingBytes = 64L << 20;

    readonly SafeFileHandle file;
    readonly SafeTensorsHeader header;

    SafeTensorsReader(string path, SafeFileHandle file, SafeTensorsHeader header)
    {
        Path = path;
        this.file = file;
        this.header = header;
    }

    /// <summary>Opens <paramref name="path"/> and validates its header (see <see cref="SafeTensorsHeader"/>).</summary>
    public static SafeTensorsReader Open(string path)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("safetensors data is little-endian");
        // No FileOptions.RandomAccess: that hint (POSIX_FADV_RANDOM) turns off kernel readahead, and tensors are
        // read front to back in large pieces; with readahead a cold 512 MB read ran 2x faster (scripts/bench io).
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        try
        {
            return new SafeTensorsReader(path, handle, SafeTensorsHeader.Read(handle, path));
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    public string Path { get; }
    public IReadOnlyDictionary<string, SafeTensorEntry> Entries => header.Entries;
    public IReadOnlyDictionary<string, string> Metadata => header.Metadata;
    public SafeTensorsHeader Header => header;

    public SafeTensorEntry Entry(string name) =>
        header.Entries.TryGetValue(name, out var entry) ? entry
            : throw new KeyNotFoundException($"safetensors file {Path} has no tensor \"{name}\"");

    /// <summary>A new tensor holding <paramref name="name"/>, converted to <paramref name="dtype"/> and placed on <paramref name="device"/> if given.</summary>
    public Tensor ReadTensor(string name, ScalarType? dtype = null, Device? device = null)
    {
        var entry = Entry(name);
        var result = empty(entry.Shape, dtype ?? entry.Dtype, device ?? CPU);
        try
        {
            ReadInto(name, result);
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Fills <paramref name="destination"/> (same shape; any dtype, any device, e.g. a model parameter) with
    /// tensor <paramref name="name"/>. No autograd history is recorded.
    /// </summary>
    public void ReadInto(string name, Tensor destination)
    {
        var entry = Entry(name);
        if (!destination.shape.SequenceEqual(entry.Shape))
            throw new InvalidDataException($"safetensors file {Path}, tensor \"{name}\": stored shape {entry.ShapeText} but the destination is [{string.Join(", ", destination.shape)}]");
        if (destination.is_contiguous())
        {
            ReadElements(entry, 0, destination);
            return;
        }
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        destination.copy_(ReadTensor(name));
    }

    /// <summary>
    /// Fills the contiguous <paramref name="destination"/> (any shape, dtype, device) with destination.numel()
    /// elements of tensor <paramref name="name"/> taken in row-major order from element <paramref name="firstElement"/>:
    /// what a sharded engine needs to load only its slice of a flattened parameter.
    /// </summary>
    public void ReadSlice(string name, long firstElement, Tensor destination)
    {
        var entry = Entry(name);
        if (!destination.is_contiguous()) throw new ArgumentException("ReadSlice needs a contiguous destination", nameof(destination));
        if (firstElement < 0 || firstElement + destination.numel() > entry.ElementCount)
            throw new ArgumentOutOfRangeException(nameof(firstElement), $"elements [{firstElement}, {firstElement + destination.numel()}) are outside tensor \"{name}\" ({entry.ElementCount} elements)");
        ReadElements(entry, firstElement, destination);
    }

    /// <summary>
    /// Reads the whole file once, front to back, filling <paramref name="destinations"/>[name] (same shape) for every
    /// tensor that has one, and returns the <paramref name="algorithm"/> digest (lower-case hex) of every byte of the
    /// file (header included), as a checkpoint manifest records it. Hashing the bytes just read, while they are still in the CPU cache, replaces a separate
    /// verification pass over the file: one disk read instead of two. The destinations hold unverified data until the
    /// caller has compared the digest, so a caller must not use them when it does not match.
    /// Every destination must name a tensor of the file; tensors without a destination are read and hashed only.
    /// </summary>
    public string ReadAllIntoHashing(IReadOnlyDictionary<string, Tensor> destinations, DigestAlgorithm algorithm)
    {
        foreach (var name in destinations.Keys) Entry(name); // a missing tensor fails before anything is read
        // The hash keeps this thread busy between reads; with the kernel fetching the rest of the file meanwhile,
        // the disk does not sit idle while it runs (measured: scripts/bench/README.md, "Verified resume").
        PageCache.PrefetchInBackground(file);
        using var sha = new ContentDigest(algorithm);
        var scratch = new byte[(int)Math.Min(HashChunkBytes, Math.Max(header.DataStart, 1))];
        HashRange(sha, 0, header.DataStart, ref scratch);
        // The header guarantees the entries tile the data section up to the end of the file, so file order covers every byte.
        foreach (var entry in header.EntriesInFileOrder)
        {
            if (!destinations.TryGetValue(entry.Name, out var destination))
            {
                HashRange(sha, header.DataStart + entry.Begin, entry.ByteLength, ref scratch);
                continue;
            }
            if (!destination.shape.SequenceEqual(entry.Shape))
                throw new InvalidDataException($"safetensors file {Path}, tensor \"{entry.Name}\": stored shape {entry.ShapeText} but the destination is [{string.Join(", ", destination.shape)}]");
            if (destination.is_contiguous())
            {
                ReadElements(entry, 0, destination, sha);
                continue;
            }
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var whole = empty(entry.Shape, entry.Dtype, CPU);
            ReadElements(entry, 0, whole, sha);
            destination.copy_(whole);
        }
        return sha.FinishHex();
    }

    /// <summary>
    /// Piece size while hashing: small enough that the bytes are still in the CPU cache when the hash reads them,
    /// large enough that the per-read cost is noise next to the copy.
    /// </summary>
    const long HashChunkBytes = 4L << 20;

    void HashRange(ContentDigest sha, long offset, long length, ref byte[] scratch)
    {
        if (length > 0 && scratch.Length < Math.Min(length, HashChunkBytes)) scratch = new byte[Math.Min(length, HashChunkBytes)];
        for (long done = 0; done < length; done += scratch.Length)
        {
            var piece = scratch.AsSpan(0, (int)Math.Min(scratch.Length, length - done));
            SafeTensorsHeader.ReadExactly(file, piece, offset + done, Path);
            sha.Append(piece);
        }
    }

    void ReadElements(SafeTensorEntry entry, long firstElement, Tensor destination, ContentDigest? sha = null)
    {
        long count = destination.numel();
        if (count == 0) return;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        long fileOffset = header.DataStart + entry.Begin + firstElement * entry.ElementSize;
        var flat = destination.view(-1);
        if (destination.device_type == DeviceType.CPU && destination.dtype == entry.Dtype)
        {
            ReadChunks(entry, flat, fileOffset, sha);
            return;
        }
        // Convert (e.g. BF16 file → fp32 model) and/or transfer (CPU → GPU) chunk by chunk.
        long chunkElements = Math.Max(1, StagingBytes / entry.ElementSize);
        var staging = empty(Math.Min(chunkElements, count), entry.Dtype, CPU);
        for (long start = 0; start < count; start += chunkElements)
        {
            long n = Math.Min(chunkElements, count - start);
            var stage = staging.narrow(0, 0, n);
            ReadChunks(entry, stage, fileOffset + start * entry.ElementSize, sha);
            flat.narrow(0, start, n).copy_(stage);
        }
    }

    /// <summary>Reads flat.numel() elements at <paramref name="fileOffset"/> into the contiguous CPU tensor <paramref name="flat"/>.</summary>
    void ReadChunks(SafeTensorEntry entry, Tensor flat, long fileOffset, ContentDigest? sha)
    {
        // Tensor.bytes spans at most int.MaxValue bytes, so large tensors are read in slices; when hashing, in
        // cache-sized slices so the hash reads what the copy just wrote without another trip to memory.
        long sliceElements = Math.Max(1, (sha is null ? 1L << 30 : HashChunkBytes) / entry.ElementSize);
        long total = flat.shape[0];
        for (long start = 0; start < total; start += sliceElements)
        {
            long count = Math.Min(sliceElements, total - start);
            using var slice = flat.narrow(0, start, count);
            var bytes = slice.bytes;
            SafeTensorsHeader.ReadExactly(file, bytes, fileOffset + start * entry.ElementSize, Path);
            sha?.Append(bytes);
        }
    }

    public void Dispose() => file.Dispose();
}
