namespace MeLlama.Distributed.Nccl;

/// <summary>
/// The NCCL functions MeLlama uses, with result codes turned into <see cref="NcclException"/>.
/// <see cref="NcclNativeApi"/> binds libnccl; tests substitute fakes to check the communicator's logic.
/// Pointers are device addresses; <c>stream</c> is a cudaStream_t (zero: the legacy default stream).
/// </summary>
public interface INcclApi
{
    Version Version { get; }
    NcclUniqueId GetUniqueId();
    IntPtr CommInitRank(int nranks, NcclUniqueId id, int rank);
    void AllReduce(IntPtr send, IntPtr recv, ulong count, NcclDataType type, NcclRedOp op, IntPtr comm, IntPtr stream);
    void ReduceScatter(IntPtr send, IntPtr recv, ulong recvCount, NcclDataType type, NcclRedOp op, IntPtr comm, IntPtr stream);
    void AllGather(IntPtr send, IntPtr recv, ulong sendCount, NcclDataType type, IntPtr comm, IntPtr stream);
    void Broadcast(IntPtr send, IntPtr recv, ulong count, NcclDataType type, int root, IntPtr comm, IntPtr stream);
    void GroupStart();
    void GroupEnd();

    /// <summary>An error raised asynchronously by the communicator (e.g. a remote peer failed); Success when none.</summary>
    NcclResult CommGetAsyncError(IntPtr comm);

    void CommAbort(IntPtr comm);
    void CommDestroy(IntPtr comm);
    string GetErrorString(NcclResult result);

    /// <summary>NCCL's detailed message for the last error (NCCL 2.13+); null when unavailable.</summary>
    string? GetLastError(IntPtr comm);
}
