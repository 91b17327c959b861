using MeLlama.Distributed.Store;
using Serilog;

namespace MeLlama.Distributed;

/// <summary>
/// What every backend shares: this rank's connection to the rendezvous store, its membership (the
/// store's push channel for abort notices), and the group's abort state. The first abort notice wins
/// and is final; it cancels <see cref="AbortToken"/>, which every in-flight collective observes.
/// </summary>
public sealed class ProcessGroup : IDisposable
{
    readonly CancellationTokenSource aborted = new();
    readonly StoreMembership membership;
    readonly TcpStoreServer? ownedServer;
    AbortNotice? notice;
    int disposed;

    public int Rank { get; }
    public int WorldSize { get; }
    public string Group { get; }
    public TcpStoreClient Store { get; }
    public JobSecret Secret { get; }
    public ILogger Log { get; }
    public TimeSpan ConnectTimeout { get; }

    /// <summary>Cancelled when the group is aborted (a peer died, a rank failed, or <see cref="PostAbort"/>).</summary>
    public CancellationToken AbortToken => aborted.Token;

    public AbortNotice? Notice => Volatile.Read(ref notice);

    ProcessGroup(int rank, int worldSize, string group, TcpStoreClient store, JobSecret secret, ILogger log, TimeSpan connectTimeout,
        Func<Action<AbortNotice>, StoreMembership> join, TcpStoreServer? ownedServer)
    {
        Rank = rank;
        WorldSize = worldSize;
        Group = group;
        Store = store;
        Secret = secret;
        Log = log;
        ConnectTimeout = connectTimeout;
        this.ownedServer = ownedServer;
        membership = join(OnNotice);
    }

    /// <summary>
    /// Connects rank <paramref name="rank"/> to the store at <paramref name="host"/>:<paramref name="port"/>.
    /// <paramref name="ownedServer"/> (rank 0's store, if it hosts it) is stopped on dispose, after the other ranks left.
    /// </summary>
    public static ProcessGroup Join(string host, int port, JobSecret secret, string group, int rank, int worldSize,
        TimeSpan connectTimeout, ILogger? log = null, TcpStoreServer? ownedServer = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(worldSize, 1);
        if (rank < 0 || rank >= worldSize) throw new ArgumentOutOfRangeException(nameof(rank), $"rank {rank} is not in [0, {worldSize})");
        var store = TcpStoreClient.Connect(host, port, secret, connectTimeout);
        try
        {
            return new ProcessGroup(rank, worldSize, group, store, secret, log ?? Serilog.Core.Logger.None, connectTimeout,
                onAbort => StoreMembership.Join(host, port, secret, group, rank, connectTimeout, onAbort), ownedServer);
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    void OnNotice(AbortNotice received)
    {
        if (Interlocked.CompareExchange(ref notice, received, null) != null) return;
        if (Volatile.Read(ref disposed) == 0) Log.Error("Job aborted: {Reason}", received.Reason);
        try { aborted.Cancel(); } catch (ObjectDisposedException) { }
    }

    /// <summary>
    /// Records <paramref name="proposed"/> as the group's abort reason unless another rank got there first,
    /// and returns the reason that stands (the earliest, usually closest to the root cause).
    /// </summary>
    public AbortNotice PostAbort(AbortNotice proposed)
    {
        var standing = proposed;
        try
        {
            var (_, current) = Store.SetIfAbsent(AbortNotice.Key(Group), proposed.Encode());
            standing = AbortNotice.Decode(current);
        }
        catch (Exception e) when (e is IOException or TimeoutException) { } // store gone: our own reason stands locally
        OnNotice(standing);
        return Notice ?? standing;
    }

    /// <summary>Waits up to <paramref name="wait"/> for an abort notice to arrive (e.g. the store reporting which rank died).</summary>
    public AbortNotice? WaitForNotice(TimeSpan wait)
    {
        if (Notice is { } n) return n;
        AbortToken.WaitHandle.WaitOne(wait);
        return Notice;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0) return;
        membership.Dispose();
        Store.Dispose();
        if (ownedServer != null)
        {
            // Let the other ranks finish their last collective and leave before the store disappears under them
            // (pointless once the job is aborted: they are failing anyway).
            if (Notice == null && !ownedServer.WaitForMembersToLeave(Group, ConnectTimeout))
                Log.Warning("Stopping the rendezvous store while {Count} rank(s) are still connected", ownedServer.ConnectedMembers(Group));
            ownedServer.Dispose();
        }
    }
}
