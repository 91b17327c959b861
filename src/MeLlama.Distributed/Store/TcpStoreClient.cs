using System.Net;
using System.Net.Sockets;
using MeLlama.Distributed.Net;

namespace MeLlama.Distributed.Store;

/// <summary>
/// A connection to rank 0's <see cref="TcpStoreServer"/>. Connecting retries until the timeout because
/// the other ranks usually start before rank 0 listens. Thread-safe (requests are serialised).
/// </summary>
public sealed class TcpStoreClient : IKeyValueStore, IDisposable
{
    static readonly TimeSpan ReplyGrace = TimeSpan.FromSeconds(30);

    readonly Socket socket;
    readonly SemaphoreSlim gate = new(1, 1);
    readonly TimeSpan requestTimeout;

    /// <summary>"the rendezvous store at host:port (rank 0)": for messages.</summary>
    public string Description { get; }

    /// <summary>The local address this host uses to reach rank 0: the one to advertise to the other ranks.</summary>
    public IPAddress LocalAddress => ((IPEndPoint)socket.LocalEndPoint!).Address;

    internal Socket Socket => socket;

    TcpStoreClient(Socket socket, string description, TimeSpan requestTimeout)
    {
        this.socket = socket;
        Description = description;
        this.requestTimeout = requestTimeout;
    }

    public static TcpStoreClient Connect(string host, int port, JobSecret secret, TimeSpan timeout, CancellationToken ct = default) =>
        ConnectAsync(host, port, secret, timeout, ct).GetAwaiter().GetResult();

    public static async Task<TcpStoreClient> ConnectAsync(string host, int port, JobSecret secret, TimeSpan timeout, CancellationToken ct = default)
    {
        string description = $"the rendezvous store at {host}:{port} (rank 0)";
        var socket = await ConnectWithRetryAsync(host, port, timeout, description, ct).ConfigureAwait(false);
        try
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(TimeSpan.FromSeconds(30));
            await Handshake.ConnectAsync(socket, secret, "store", description, cts.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not PeerAuthenticationException)
        {
            socket.Dispose();
            throw new IOException($"handshake with {description} failed: {e.Message}", e);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return new TcpStoreClient(socket, description, timeout);
    }

    /// <summary>Connects, retrying refused or unreachable attempts every 200 ms until <paramref name="timeout"/>.</summary>
    internal static async Task<Socket> ConnectWithRetryAsync(string host, int port, TimeSpan timeout, string description, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + timeout;
        Exception? last = null;
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            try
            {
                var addresses = IPAddress.TryParse(host, out var ip) ? [ip] : await Dns.GetHostAddressesAsync(host, ct).ConfigureAwait(false);
                foreach (var address in addresses.OrderBy(a => a.AddressFamily == AddressFamily.InterNetwork ? 0 : 1))
                {
                    var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                    try
                    {
                        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(ct);
                        attempt.CancelAfter(TimeSpan.FromSeconds(5));
                        await socket.ConnectAsync(new IPEndPoint(address, port), attempt.Token).ConfigureAwait(false);
                        SocketIO.Configure(socket);
                        return socket;
                    }
                    catch (Exception e) when (e is SocketException or OperationCanceledException && !ct.IsCancellationRequested)
                    {
                        socket.Dispose();
                        last = e;
                    }
                }
            }
            catch (SocketException e) { last = e; } // name resolution failed: maybe DNS is slow to learn the node
            if (DateTime.UtcNow >= deadline)
                throw new TimeoutException($"could not reach {description} within {timeout.TotalSeconds:0} s: {last?.Message} (is rank 0 running, and are MASTER_ADDR/MASTER_PORT right?)", last);
            await Task.Delay(200, ct).ConfigureAwait(false);
        }
    }

    public void Set(string key, ReadOnlySpan<byte> value) =>
        Expect(Request(new FrameWriter().Byte((byte)StoreCommand.Set).String(key).Blob(value).ToArray(), requestTimeout), key);

    public byte[] Get(string key, TimeSpan timeout)
    {
        var reply = Request(new FrameWriter().Byte((byte)StoreCommand.Get).String(key).Int64((long)timeout.TotalMilliseconds).ToArray(), timeout + ReplyGrace);
        var status = (StoreStatus)reply.Byte();
        if (status == StoreStatus.Timeout) throw new TimeoutException($"no rank set '{key}' in {Description} within {timeout.TotalSeconds:0.#} s");
        Expect(status, reply, key);
        return reply.Blob();
    }

    public long Add(string key, long delta)
    {
        var reply = Request(new FrameWriter().Byte((byte)StoreCommand.Add).String(key).Int64(delta).ToArray(), requestTimeout);
        Expect((StoreStatus)reply.Byte(), reply, key);
        return reply.Int64();
    }

    public (bool WasSet, byte[] Current) SetIfAbsent(string key, ReadOnlySpan<byte> value)
    {
        var reply = Request(new FrameWriter().Byte((byte)StoreCommand.SetIfAbsent).String(key).Blob(value).ToArray(), requestTimeout);
        Expect((StoreStatus)reply.Byte(), reply, key);
        bool wasSet = reply.Byte() == 1;
        return (wasSet, reply.Blob());
    }

    void Expect(FrameReader reply, string key) => Expect((StoreStatus)reply.Byte(), reply, key);

    void Expect(StoreStatus status, FrameReader reply, string key)
    {
        if (status == StoreStatus.Ok) return;
        string detail = status == StoreStatus.Error ? reply.String() : status.ToString();
        throw new IOException($"{Description} failed a request for '{key}': {detail}");
    }

    FrameReader Request(byte[] payload, TimeSpan timeout)
    {
        gate.Wait();
        try
        {
            using var cts = new CancellationTokenSource(timeout);
            try
            {
                SocketIO.WriteFrameAsync(socket, payload, cts.Token).AsTask().GetAwaiter().GetResult();
                return new FrameReader(SocketIO.ReadFrameAsync(socket, cts.Token).AsTask().GetAwaiter().GetResult());
            }
            catch (OperationCanceledException e)
            {
                throw new TimeoutException($"{Description} did not answer within {timeout.TotalSeconds:0} s", e);
            }
            catch (Exception e) when (e is EndOfStreamException or SocketException)
            {
                throw new IOException($"lost the connection to {Description}: rank 0 exited or its host is unreachable ({e.Message})", e);
            }
        }
        finally { gate.Release(); }
    }

    public void Dispose()
    {
        try { socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
        socket.Dispose();
    }
}
