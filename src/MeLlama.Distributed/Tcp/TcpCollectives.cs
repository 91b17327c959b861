using System.Net.Sockets;
using System.Runtime.InteropServices;
using MeLlama.Distributed.Store;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Distributed.Tcp;

/// <summary>
/// Collectives over TCP for CPU tensors, with Gloo's ring algorithms: reduce-scatter in W−1 steps (each
/// rank sends one chunk to its successor while receiving another from its predecessor and reducing it
/// segment by segment), all-gather in W−1 steps, all-reduce = reduce-scatter + all-gather (each rank
/// sends and receives 2(W−1)/W of the buffer: bandwidth-optimal), broadcast as a pipelined chain.
/// Transfers go straight from and into tensor memory; the only copies are received segments before
/// they are reduced.
/// </summary>
public sealed class TcpCollectives : ICollectives
{
    readonly ProcessGroup group;
    readonly bool ownsGroup;
    readonly Socket toNext, fromPrev;
    readonly int next, prev;
    readonly CollectivesOptions options;
    readonly byte[] segment;
    readonly byte[] headerOut = new byte[OpHeader.Size], headerIn = new byte[OpHeader.Size];
    readonly long[] barrierBuffer;
    IntPtr scratch;
    long scratchBytes;
    long sequence;
    volatile bool headerArrived;
    CancellationTokenSource? operation; // the call in flight: cancelled when one of its transfers fails
    int busy;
    CollectiveException? broken;
    int disposed;

    public int Rank => group.Rank;
    public int WorldSize => group.WorldSize;
    public string Backend => "tcp";
    public TimeSpan Timeout => options.Timeout;

    TcpCollectives(ProcessGroup group, bool ownsGroup, Socket toNext, Socket fromPrev, CollectivesOptions options)
    {
        this.group = group;
        this.ownsGroup = ownsGroup;
        this.toNext = toNext;
        this.fromPrev = fromPrev;
        this.options = options;
        next = (group.Rank + 1) % group.WorldSize;
        prev = (group.Rank - 1 + group.WorldSize) % group.WorldSize;
        segment = GC.AllocateArray<byte>(Math.Max(4096, options.SegmentBytes / 8 * 8), pinned: true);
        barrierBuffer = GC.AllocateArray<long>(group.WorldSize, pinned: true);
    }

    /// <summary>Builds the ring for <paramref name="group"/>. With <paramref name="ownsGroup"/>, disposing this also disposes the group.</summary>
    public static TcpCollectives Connect(ProcessGroup group, CollectivesOptions options, bool ownsGroup = true)
    {
        if (group.WorldSize < 2) throw new ArgumentException("the TCP backend needs at least two ranks; use SingleProcessCollectives for one");
        var advertise = options.AdvertiseAddress ?? group.Store.LocalAddress;
        var (toNext, fromPrev) = RingConnector.Connect(group, advertise, options.SocketBufferBytes);
        group.Log.Debug("Rank {Rank} joined the TCP ring (advertised {Address})", group.Rank, advertise);
        return new TcpCollectives(group, ownsGroup, toNext, fromPrev, options);
    }

    // ---- public operations -------------------------------------------------------------------------

    public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum, TimeSpan? timeout = null)
    {
        CollectiveArgs.CheckReducible(tensor, nameof(tensor), DeviceType.CPU);
        long numel = tensor.NumberOfElements;
        int e = (int)tensor.ElementSize;
        var dtype = tensor.dtype;
        var header = NextHeader(OpKind.AllReduce, dtype, op, numel, 0);
        IntPtr data = TensorMemory.DataPointer(tensor);
        Run(header, timeout, ct => AllReduceAsync(data, numel, e, dtype, op, ct));
    }

    public void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum, TimeSpan? timeout = null)
    {
        CollectiveArgs.CheckReduceScatter(input, output, WorldSize, DeviceType.CPU);
        long n = output.NumberOfElements;
        int e = (int)output.ElementSize;
        IntPtr inPtr = TensorMemory.DataPointer(input), outPtr = TensorMemory.DataPointer(output);
        CollectiveArgs.CheckOwnSliceOrDisjoint(inPtr, input.NumberOfElements * e, outPtr, n * e, Rank, "reduce_scatter output");
        var dtype = input.dtype;
        var header = NextHeader(OpKind.ReduceScatter, dtype, op, n, 0);
        Run(header, timeout, ct =>
        {
            if (WorldSize >= 3) EnsureScratch(2 * n * e);
            return ReduceScatterAsync(inPtr, outPtr, n, e, dtype, op, ct);
        });
    }

    public void AllGather(Tensor input, Tensor output, TimeSpan? timeout = null)
    {
        CollectiveArgs.CheckAllGather(input, output, WorldSize, DeviceType.CPU);
        long n = input.NumberOfElements;
        int e = (int)input.ElementSize;
        IntPtr inPtr = TensorMemory.DataPointer(input), outPtr = TensorMemory.DataPointer(output);
        CollectiveArgs.CheckOwnSliceOrDisjoint(outPtr, output.NumberOfElements * e, inPtr, n * e, Rank, "all_gather input");
        var header = NextHeader(OpKind.AllGather, input.dtype, ReduceOp.Sum, n, 0);
        Run(header, timeout, ct =>
        {
            IntPtr own = outPtr + (nint)(Rank * n * e);
            if (own != inPtr && n > 0) CopyBytes(inPtr, own, n * e);
            return AllGatherAsync(outPtr, new RingChunksEqual(n), e, ct);
        });
    }

    public void Broadcast(Tensor tensor, int root = 0, TimeSpan? timeout = null)
    {
        CollectiveArgs.CheckTensor(tensor, nameof(tensor), DeviceType.CPU);
        CollectiveArgs.CheckRoot(root, WorldSize);
        var header = NextHeader(OpKind.Broadcast, tensor.dtype, ReduceOp.Sum, tensor.NumberOfElements, root);
        IntPtr data = TensorMemory.DataPointer(tensor);
        long bytes = TensorMemory.ByteCount(tensor);
        Run(header, timeout, ct => BroadcastAsync(data, bytes, root, ct));
    }

    public void Barrier(TimeSpan? timeout = null)
    {
        // An all-reduce of one element per rank: no rank can finish before every rank has contributed.
        var header = NextHeader(OpKind.Barrier, ScalarType.Int64, ReduceOp.Sum, WorldSize, 0);
        Array.Clear(barrierBuffer);
        IntPtr data = Marshal.UnsafeAddrOfPinnedArrayElement(barrierBuffer, 0);
        Run(header, timeout, ct => AllReduceAsync(data, WorldSize, sizeof(long), ScalarType.Int64, ReduceOp.Sum, ct));
    }

    public void Abort(string reason)
    {
        var standing = group.PostAbort(new AbortNotice(Rank, $"rank {Rank} aborted the job: {reason}"));
        Break(new CollectiveException($"the job was aborted: {standing.Reason}", standing.FailedRank >= 0 ? standing.FailedRank : null));
    }

    // ---- algorithms ----------------------------------------------------------------------------------

    async Task AllReduceAsync(IntPtr data, long numel, int e, ScalarType dtype, ReduceOp op, CancellationToken ct)
    {
        var chunks = new RingChunks(numel, WorldSize);
        int r = Rank, w = WorldSize;
        for (int s = 0; s < w - 1; s++)
        {
            int send = Mod(r - s - 1), recv = Mod(r - s - 2);
            IntPtr recvAt = data + (nint)(chunks.Offset(recv) * e);
            await BothAsync(
                SendAsync(data + (nint)(chunks.Offset(send) * e), chunks.Count(send) * e, ct),
                ReceiveReduceAsync(recvAt, recvAt, chunks.Count(recv) * e, dtype, op, ct)).ConfigureAwait(false);
        }
        if (op == ReduceOp.Avg) DivideBytes(data + (nint)(chunks.Offset(r) * e), chunks.Count(r) * e, dtype, w);
        await AllGatherAsync(data, chunks, e, ct).ConfigureAwait(false);
    }

    async Task ReduceScatterAsync(IntPtr input, IntPtr output, long n, int e, ScalarType dtype, ReduceOp op, CancellationToken ct)
    {
        int r = Rank, w = WorldSize;
        long bytes = n * e;
        // Partial sums alternate between two scratch halves: step s writes one while sending the other.
        IntPtr Partial(int step) => scratch + (nint)(step % 2 * bytes);
        for (int s = 0; s < w - 1; s++)
        {
            int send = Mod(r - s - 1), recv = Mod(r - s - 2);
            IntPtr sendFrom = s == 0 ? input + (nint)(send * bytes) : Partial(s - 1);
            IntPtr writeTo = s == w - 2 ? output : Partial(s);
            await BothAsync(
                SendAsync(sendFrom, bytes, ct),
                ReceiveReduceAsync(input + (nint)(recv * bytes), writeTo, bytes, dtype, op, ct)).ConfigureAwait(false);
        }
        if (op == ReduceOp.Avg) DivideBytes(output, bytes, dtype, w);
    }

    async Task AllGatherAsync(IntPtr data, IChunking chunks, int e, CancellationToken ct)
    {
        int r = Rank;
        for (int s = 0; s < WorldSize - 1; s++)
        {
            int send = Mod(r - s), recv = Mod(r - s - 1);
            await BothAsync(
                SendAsync(data + (nint)(chunks.Offset(send) * e), chunks.Count(send) * e, ct),
                ReceiveAsync(data + (nint)(chunks.Offset(recv) * e), chunks.Count(recv) * e, ct)).ConfigureAwait(false);
        }
    }

    async Task BroadcastAsync(IntPtr data, long bytes, int root, CancellationToken ct)
    {
        int position = Mod(Rank - root);
        if (position == 0) { await SendAsync(data, bytes, ct).ConfigureAwait(false); return; }
        bool forward = position < WorldSize - 1;
        // Pipelined chain: forward each segment as soon as it has arrived.
        Task pending = Task.CompletedTask;
        try
        {
            for (long done = 0; done < bytes;)
            {
                long piece = Math.Min(segment.Length, bytes - done);
                await ReceiveAsync(data + (nint)done, piece, ct).ConfigureAwait(false);
                if (forward)
                {
                    await pending.ConfigureAwait(false);
                    pending = SendAsync(data + (nint)done, piece, ct);
                }
                done += piece;
            }
        }
        catch
        {
            // Do not return while a forwarding send may still read the tensor.
            try { operation?.Cancel(); } catch (ObjectDisposedException) { }
            await Settle(pending).ConfigureAwait(false);
            throw;
        }
        await pending.ConfigureAwait(false);
    }

    // ---- transport -----------------------------------------------------------------------------------

    async Task SendAsync(IntPtr from, long bytes, CancellationToken ct)
    {
        try
        {
            for (long done = 0; done < bytes;)
            {
                int piece = (int)Math.Min(1 << 28, bytes - done);
                var memory = Tcp.UnmanagedMemory.Of(from + (nint)done, piece);
                while (memory.Length > 0)
                {
                    int sent = await toNext.SendAsync(memory, SocketFlags.None, ct).ConfigureAwait(false);
                    memory = memory[sent..];
                }
                done += piece;
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException)
        {
            throw new PeerIOException(next, sending: true, e);
        }
    }

    async Task ReceiveAsync(IntPtr into, long bytes, CancellationToken ct)
    {
        try
        {
            for (long done = 0; done < bytes;)
            {
                int n = await fromPrev.ReceiveAsync(Tcp.UnmanagedMemory.Of(into + (nint)done, (int)Math.Min(1 << 28, bytes - done)), SocketFlags.None, ct).ConfigureAwait(false);
                if (n == 0) throw new EndOfStreamException();
                done += n;
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException)
        {
            throw new PeerIOException(prev, sending: false, e);
        }
    }

    /// <summary>Receives <paramref name="bytes"/> segment by segment and writes dest = local ⊕ received.</summary>
    async Task ReceiveReduceAsync(IntPtr local, IntPtr dest, long bytes, ScalarType dtype, ReduceOp op, CancellationToken ct)
    {
        var buffer = segment.AsMemory();
        try
        {
            for (long done = 0; done < bytes;)
            {
                int piece = (int)Math.Min(segment.Length, bytes - done);
                for (int filled = 0; filled < piece;)
                {
                    int n = await fromPrev.ReceiveAsync(buffer[filled..piece], SocketFlags.None, ct).ConfigureAwait(false);
                    if (n == 0) throw new EndOfStreamException();
                    filled += n;
                }
                Reduction.Combine(dtype, op, Tcp.UnmanagedMemory.Span(local + (nint)done, piece), segment.AsSpan(0, piece), Tcp.UnmanagedMemory.Span(dest + (nint)done, piece));
                done += piece;
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException)
        {
            throw new PeerIOException(prev, sending: false, e);
        }
    }

    /// <summary>
    /// Runs a send and a receive together. On the first failure the other is cancelled, and both have
    /// finished touching tensor memory before this returns; the first failure is the one reported.
    /// </summary>
    async Task BothAsync(Task send, Task receive)
    {
        var first = await Task.WhenAny(send, receive).ConfigureAwait(false);
        var other = first == send ? receive : send;
        if (first.IsFaulted || first.IsCanceled)
        {
            try { operation?.Cancel(); } catch (ObjectDisposedException) { }
            await Settle(other).ConfigureAwait(false);
            await first.ConfigureAwait(false);
        }
        await other.ConfigureAwait(false);
    }

    static async Task Settle(Task task)
    {
        try { await task.ConfigureAwait(false); } catch (Exception) { /* the first failure is reported */ }
    }

    // ---- operation lifecycle ---------------------------------------------------------------------------

    OpHeader NextHeader(OpKind kind, ScalarType dtype, ReduceOp op, long numel, int root) =>
        new(sequence + 1, kind, dtype, op, numel, root);

    void Run(OpHeader header, TimeSpan? timeout, Func<CancellationToken, Task> body)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        if (Interlocked.Exchange(ref busy, 1) != 0)
            throw new InvalidOperationException("collectives were called from two threads at once; a communicator serves one thread");
        try
        {
            if (broken != null) throw new CollectiveException($"{header.Describe()} cannot run: this communicator failed earlier ({broken.Message})", broken.FailedRank);
            if (group.Notice is { } early)
            {
                Break(new CollectiveException($"{header.Describe()} failed on rank {Rank}: {early.Reason}", early.FailedRank >= 0 ? early.FailedRank : null));
                throw broken!;
            }
            sequence = header.Sequence;
            var limit = timeout ?? options.Timeout;
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(group.AbortToken);
            cts.CancelAfter(limit);
            operation = cts;
            try
            {
                RunAsync(header, body, cts.Token).GetAwaiter().GetResult();
            }
            catch (Exception e) when (e is OperationCanceledException or PeerIOException or RingMismatchException)
            {
                Break(Diagnose(header, e, limit));
                throw broken!;
            }
            finally { operation = null; }
        }
        finally { Volatile.Write(ref busy, 0); }
    }

    async Task RunAsync(OpHeader header, Func<CancellationToken, Task> body, CancellationToken ct)
    {
        header.Write(headerOut);
        headerArrived = false;
        var send = SendHeaderAsync(ct);
        var receive = ReceiveHeaderAsync(ct);
        await BothAsync(send, receive).ConfigureAwait(false);
        var theirs = OpHeader.Read(headerIn);
        if (theirs != header) throw new RingMismatchException(header, theirs);
        await body(ct).ConfigureAwait(false);
    }

    async Task SendHeaderAsync(CancellationToken ct)
    {
        try { await Net.SocketIO.WriteAllAsync(toNext, headerOut, ct).ConfigureAwait(false); }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException) { throw new PeerIOException(next, sending: true, e); }
    }

    async Task ReceiveHeaderAsync(CancellationToken ct)
    {
        try
        {
            await Net.SocketIO.ReadExactlyAsync(fromPrev, headerIn, ct).ConfigureAwait(false);
            headerArrived = true;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException) { throw new PeerIOException(prev, sending: false, e); }
    }

    /// <summary>Turns a low-level failure into the job-wide explanation, agreeing with the other ranks through the store.</summary>
    CollectiveException Diagnose(OpHeader header, Exception e, TimeSpan limit)
    {
        string what = header.Describe();
        if (group.Notice is { } known) return Explain(what, known, e);
        AbortNotice local;
        bool timedOut = false;
        switch (e)
        {
            case RingMismatchException m:
                local = new AbortNotice(prev, $"ranks disagree on the collective: rank {Rank} is in {m.Ours.Describe()} but rank {prev} sent {m.Theirs.Describe()}");
                break;
            case PeerIOException io:
                // The peer's end went away. The store usually reports the death of that process within moments;
                // prefer its notice, which also covers "the peer closed because a third rank failed".
                if (group.WaitForNotice(TimeSpan.FromSeconds(2)) is { } reported) return Explain(what, reported, e);
                local = new AbortNotice(io.Peer, io.Sending
                    ? $"rank {io.Peer} stopped accepting data from rank {Rank} ({io.InnerException?.Message}): it exited or crashed"
                    : $"rank {io.Peer} closed its connection to rank {Rank} ({io.InnerException?.Message}): it exited or crashed");
                break;
            default:
                // If the predecessor entered this collective it is probably stuck behind someone else, who
                // is timing out right now too: give the rank nearest the culprit a moment to report it.
                if (headerArrived && group.WaitForNotice(TimeSpan.FromSeconds(Math.Clamp(limit.TotalSeconds / 10, 2, 10))) is { } other)
                    return Explain(what, other, e);
                timedOut = true;
                local = new AbortNotice(prev, headerArrived
                    ? $"rank {Rank} timed out after {limit.TotalSeconds:0.#} s in {what}: rank {prev} stopped sending mid-operation (hung, stopped, or waiting on another rank)"
                    : $"rank {Rank} timed out after {limit.TotalSeconds:0.#} s in {what}: rank {prev} never joined it (hung, stopped, busy elsewhere, or calling collectives in a different order)");
                break;
        }
        var standing = group.PostAbort(local);
        return Explain(what, standing, e, timedOut && standing == local);
    }

    CollectiveException Explain(string what, AbortNotice notice, Exception inner, bool timedOut = false) =>
        new($"{what} failed on rank {Rank}: {notice.Reason}", notice.FailedRank >= 0 ? notice.FailedRank : null, timedOut, inner);

    void Break(CollectiveException reason)
    {
        broken ??= reason;
        // Closing our ends makes the neighbours notice at once rather than at their timeout.
        CloseSockets();
    }

    void CloseSockets()
    {
        foreach (var s in new[] { toNext, fromPrev })
        {
            try { s.Shutdown(SocketShutdown.Both); } catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
            s.Dispose();
        }
    }

    // ---- helpers -------------------------------------------------------------------------------------

    int Mod(int x) => ((x % WorldSize) + WorldSize) % WorldSize;

    void EnsureScratch(long bytes)
    {
        if (scratchBytes >= bytes) return;
        unsafe
        {
            if (scratch != IntPtr.Zero) NativeMemory.AlignedFree((void*)scratch);
            scratch = (IntPtr)NativeMemory.AlignedAlloc((nuint)bytes, 64);
        }
        scratchBytes = bytes;
    }

    static void DivideBytes(IntPtr data, long bytes, ScalarType dtype, int divisor)
    {
        const int piece = 1 << 30;
        for (long done = 0; done < bytes; done += piece)
            Reduction.Divide(dtype, Tcp.UnmanagedMemory.Span(data + (nint)done, (int)Math.Min(piece, bytes - done)), divisor);
    }

    static unsafe void CopyBytes(IntPtr from, IntPtr to, long bytes) =>
        Buffer.MemoryCopy((void*)from, (void*)to, bytes, bytes);

    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0) return;
        CloseSockets();
        unsafe
        {
            if (scratch != IntPtr.Zero) NativeMemory.AlignedFree((void*)scratch);
        }
        scratch = IntPtr.Zero;
        if (ownsGroup) group.Dispose();
    }

    sealed class PeerIOException(int peer, bool sending, Exception inner) : IOException(inner.Message, inner)
    {
        public int Peer { get; } = peer;
        public bool Sending { get; } = sending;
    }

    sealed class RingMismatchException(OpHeader ours, OpHeader theirs) : Exception("collective mismatch")
    {
        public OpHeader Ours { get; } = ours;
        public OpHeader Theirs { get; } = theirs;
    }
}
