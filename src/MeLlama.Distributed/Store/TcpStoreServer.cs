using System.Net;
using System.Net.Sockets;
using MeLlama.Distributed.Net;
using Serilog;

namespace MeLlama.Distributed.Store;

/// <summary>
/// The rendezvous key-value store, hosted by rank 0 on MASTER_PORT. Every connection must pass the
/// job-secret handshake first. Besides set/get/add it tracks group membership: each rank keeps one
/// membership connection open; when one drops without saying goodbye, the server records an abort
/// notice naming that rank, and pushes it to every other member, so that all ranks stop within
/// moments of a peer's death instead of waiting for a timeout.
/// </summary>
public sealed class TcpStoreServer : IDisposable
{
    static readonly TimeSpan HandshakeTimeout = TimeSpan.FromSeconds(10);

    readonly Socket listener;
    readonly JobSecret secret;
    readonly ILogger log;
    readonly CancellationTokenSource stopping = new();
    readonly Lock gate = new();
    readonly Dictionary<string, byte[]> values = new(StringComparer.Ordinal);
    readonly Dictionary<string, TaskCompletionSource<byte[]>> waiters = new(StringComparer.Ordinal);
    readonly Dictionary<string, Dictionary<int, bool>> members = new(StringComparer.Ordinal); // group → rank → still connected
    readonly List<Socket> connections = [];
    readonly Task acceptLoop;

    public IPEndPoint EndPoint { get; }

    TcpStoreServer(Socket listener, JobSecret secret, ILogger log)
    {
        this.listener = listener;
        this.secret = secret;
        this.log = log;
        EndPoint = (IPEndPoint)listener.LocalEndPoint!;
        acceptLoop = Task.Run(AcceptLoopAsync);
    }

    /// <summary>Listens on <paramref name="address"/>:<paramref name="port"/> (port 0 picks a free one, see <see cref="EndPoint"/>).</summary>
    public static TcpStoreServer Start(IPAddress address, int port, JobSecret secret, ILogger? log = null)
    {
        var listener = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (address.Equals(IPAddress.IPv6Any)) listener.DualMode = true;
            listener.Bind(new IPEndPoint(address, port));
            listener.Listen(512);
        }
        catch (SocketException e)
        {
            listener.Dispose();
            throw new IOException(e.SocketErrorCode == SocketError.AddressAlreadyInUse
                ? $"cannot start the rendezvous store: port {port} is already in use on this host (another job? pick another MASTER_PORT)"
                : $"cannot start the rendezvous store on {address}:{port}: {e.Message}", e);
        }
        return new TcpStoreServer(listener, secret, log ?? Serilog.Core.Logger.None);
    }

    async Task AcceptLoopAsync()
    {
        while (!stopping.IsCancellationRequested)
        {
            Socket socket;
            try { socket = await listener.AcceptAsync(stopping.Token).ConfigureAwait(false); }
            catch (Exception) when (stopping.IsCancellationRequested) { return; }
            catch (SocketException e) { log.Warning("store accept failed: {Error}", e.Message); continue; }
            lock (gate) connections.Add(socket);
            _ = Task.Run(() => HandleConnectionAsync(socket));
        }
    }

    async Task HandleConnectionAsync(Socket socket)
    {
        var remote = socket.RemoteEndPoint?.ToString() ?? "?";
        try
        {
            SocketIO.Configure(socket);
            using (var handshake = CancellationTokenSource.CreateLinkedTokenSource(stopping.Token))
            {
                handshake.CancelAfter(HandshakeTimeout);
                try { await Handshake.AcceptAsync(socket, secret, "store", handshake.Token).ConfigureAwait(false); }
                catch (Exception e) when (e is PeerAuthenticationException or IOException or SocketException or OperationCanceledException)
                {
                    if (!stopping.IsCancellationRequested)
                        log.Warning("Rendezvous store refused a connection from {Remote}: {Reason}", remote, e is OperationCanceledException ? "no handshake within 10 s" : e.Message);
                    return;
                }
            }
            while (true)
            {
                byte[] frame;
                try { frame = await SocketIO.ReadFrameAsync(socket, stopping.Token).ConfigureAwait(false); }
                catch (Exception e) when (e is EndOfStreamException or SocketException or OperationCanceledException) { return; }
                var request = new FrameReader(frame);
                var command = (StoreCommand)request.Byte();
                if (command == StoreCommand.Join)
                {
                    await ServeMemberAsync(socket, request).ConfigureAwait(false);
                    return;
                }
                var reply = await ServeAsync(command, request).ConfigureAwait(false);
                await SocketIO.WriteFrameAsync(socket, reply, stopping.Token).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is InvalidDataException or IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            if (!stopping.IsCancellationRequested) log.Debug("store connection from {Remote} ended: {Error}", remote, e.Message);
        }
        finally
        {
            lock (gate) connections.Remove(socket);
            socket.Dispose();
        }
    }

    async Task<byte[]> ServeAsync(StoreCommand command, FrameReader request)
    {
        switch (command)
        {
            case StoreCommand.Set:
            {
                string key = request.String();
                SetValue(key, request.Blob());
                return [(byte)StoreStatus.Ok];
            }
            case StoreCommand.Get:
            {
                string key = request.String();
                long timeoutMs = request.Int64();
                try
                {
                    var wait = WaitForAsync(key);
                    var value = timeoutMs < 0
                        ? await wait.WaitAsync(stopping.Token).ConfigureAwait(false)
                        : await wait.WaitAsync(TimeSpan.FromMilliseconds(timeoutMs), stopping.Token).ConfigureAwait(false);
                    return new FrameWriter().Byte((byte)StoreStatus.Ok).Blob(value).ToArray();
                }
                catch (TimeoutException) { return [(byte)StoreStatus.Timeout]; }
            }
            case StoreCommand.Add:
            {
                string key = request.String();
                long delta = request.Int64();
                long result;
                lock (gate)
                {
                    long current = values.TryGetValue(key, out var old) && old.Length == 8 ? BitConverter.ToInt64(old) : 0;
                    result = current + delta;
                    SetValue(key, BitConverter.GetBytes(result));
                }
                return new FrameWriter().Byte((byte)StoreStatus.Ok).Int64(result).ToArray();
            }
            case StoreCommand.SetIfAbsent:
            {
                string key = request.String();
                var (wasSet, current) = SetIfAbsent(key, request.Blob());
                return new FrameWriter().Byte((byte)StoreStatus.Ok).Byte(wasSet ? (byte)1 : (byte)0).Blob(current).ToArray();
            }
            default:
                return new FrameWriter().Byte((byte)StoreStatus.Error).String($"unknown store command {(byte)command}").ToArray();
        }
    }

    /// <summary>A rank's membership connection: push the group's abort notice; a drop without Leave means the rank died.</summary>
    async Task ServeMemberAsync(Socket socket, FrameReader join)
    {
        string group = join.String();
        int rank = join.Int32();
        string host = join.String();
        int pid = join.Int32();
        lock (gate)
        {
            if (!members.TryGetValue(group, out var ranks)) members[group] = ranks = [];
            ranks[rank] = true;
        }
        log.Debug("Rank {MemberRank} (host {Host}, pid {Pid}) joined group {Group}", rank, host, pid, group);
        await SocketIO.WriteFrameAsync(socket, new[] { (byte)StoreStatus.Ok }, stopping.Token).ConfigureAwait(false);

        var abort = WaitForAsync(AbortNotice.Key(group));
        var leave = SocketIO.ReadFrameAsync(socket, stopping.Token).AsTask();
        bool leftCleanly = false;
        try
        {
            if (await Task.WhenAny(abort, leave).ConfigureAwait(false) == abort)
            {
                try { await SocketIO.WriteFrameAsync(socket, new FrameWriter().Byte((byte)StoreStatus.Abort).Blob(abort.Result).ToArray(), stopping.Token).ConfigureAwait(false); }
                catch (Exception e) when (e is SocketException or IOException or OperationCanceledException) { }
            }
            var frame = await leave.ConfigureAwait(false);
            leftCleanly = frame.Length > 0 && frame[0] == (byte)StoreCommand.Leave;
        }
        catch (Exception e) when (e is EndOfStreamException or SocketException or IOException or OperationCanceledException or InvalidDataException) { }
        finally
        {
            lock (gate) members[group][rank] = false;
            if (!leftCleanly && !stopping.IsCancellationRequested)
            {
                var notice = new AbortNotice(rank, $"rank {rank} (host {host}, pid {pid}) lost its connection to the rendezvous store without shutting down: the process died, was killed, or its host is unreachable");
                var (wasSet, _) = SetIfAbsent(AbortNotice.Key(group), notice.Encode());
                if (wasSet) log.Error("{Reason}", notice.Reason);
            }
        }
    }

    void SetValue(string key, byte[] value)
    {
        TaskCompletionSource<byte[]>? waiter;
        lock (gate)
        {
            values[key] = value;
            waiters.Remove(key, out waiter);
        }
        waiter?.TrySetResult(value);
    }

    (bool WasSet, byte[] Current) SetIfAbsent(string key, byte[] value)
    {
        lock (gate)
        {
            if (values.TryGetValue(key, out var existing)) return (false, existing);
            SetValue(key, value);
            return (true, value);
        }
    }

    Task<byte[]> WaitForAsync(string key)
    {
        lock (gate)
        {
            if (values.TryGetValue(key, out var value)) return Task.FromResult(value);
            if (!waiters.TryGetValue(key, out var tcs))
                waiters[key] = tcs = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
            return tcs.Task;
        }
    }

    /// <summary>Number of ranks of <paramref name="group"/> whose membership connection is still open.</summary>
    public int ConnectedMembers(string group)
    {
        lock (gate) return members.TryGetValue(group, out var ranks) ? ranks.Count(r => r.Value) : 0;
    }

    /// <summary>
    /// Rank 0 calls this before stopping the store so that ranks still finishing their last collective do
    /// not mistake the store's disappearance for rank 0's death. Returns false on timeout.
    /// </summary>
    public bool WaitForMembersToLeave(string group, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (ConnectedMembers(group) > 0)
        {
            if (DateTime.UtcNow >= deadline) return false;
            Thread.Sleep(20);
        }
        return true;
    }

    public void Dispose()
    {
        if (stopping.IsCancellationRequested) return;
        stopping.Cancel();
        listener.Dispose();
        Socket[] open;
        lock (gate) open = connections.ToArray();
        foreach (var s in open) s.Dispose();
        try { acceptLoop.Wait(TimeSpan.FromSeconds(5)); } catch (AggregateException) { }
        // `stopping` is not disposed: connection handlers may still be observing its token.
    }
}
