using System.Runtime.InteropServices;

namespace MeLlama.Distributed.Nccl;

/// <summary>
/// Binds libnccl through function pointers from <see cref="NativeLibrary"/> rather than [DllImport], so the
/// library path is a per-instance choice (MELLAMA_NCCL_LIBRARY, a test fake) and optional newer functions
/// (ncclGetLastError) can be absent. Signatures mirror nccl.h on LP64 Linux: enums are C ints,
/// size_t is nuint, ncclUniqueId travels by value as a 128-byte struct.
/// </summary>
public sealed unsafe class NcclNativeApi : INcclApi
{
    public const string DefaultLibrary = "libnccl.so.2";

    readonly delegate* unmanaged<int*, NcclResult> getVersion;
    readonly delegate* unmanaged<NcclUniqueId*, NcclResult> getUniqueId;
    readonly delegate* unmanaged<IntPtr*, int, NcclUniqueId, int, NcclResult> commInitRank;
    readonly delegate* unmanaged<IntPtr, IntPtr, nuint, NcclDataType, NcclRedOp, IntPtr, IntPtr, NcclResult> allReduce;
    readonly delegate* unmanaged<IntPtr, IntPtr, nuint, NcclDataType, NcclRedOp, IntPtr, IntPtr, NcclResult> reduceScatter;
    readonly delegate* unmanaged<IntPtr, IntPtr, nuint, NcclDataType, IntPtr, IntPtr, NcclResult> allGather;
    readonly delegate* unmanaged<IntPtr, IntPtr, nuint, NcclDataType, int, IntPtr, IntPtr, NcclResult> broadcast;
    readonly delegate* unmanaged<NcclResult> groupStart;
    readonly delegate* unmanaged<NcclResult> groupEnd;
    readonly delegate* unmanaged<IntPtr, NcclResult*, NcclResult> commGetAsyncError;
    readonly delegate* unmanaged<IntPtr, NcclResult> commAbort;
    readonly delegate* unmanaged<IntPtr, NcclResult> commDestroy;
    readonly delegate* unmanaged<NcclResult, byte*> getErrorString;
    readonly delegate* unmanaged<IntPtr, byte*> getLastError; // optional

    public string LibraryPath { get; }
    public Version Version { get; }

    NcclNativeApi(IntPtr handle, string path)
    {
        LibraryPath = path;
        getVersion = (delegate* unmanaged<int*, NcclResult>)Require(handle, "ncclGetVersion");
        getUniqueId = (delegate* unmanaged<NcclUniqueId*, NcclResult>)Require(handle, "ncclGetUniqueId");
        commInitRank = (delegate* unmanaged<IntPtr*, int, NcclUniqueId, int, NcclResult>)Require(handle, "ncclCommInitRank");
        allReduce = (delegate* unmanaged<IntPtr, IntPtr, nuint, NcclDataType, NcclRedOp, IntPtr, IntPtr, NcclResult>)Require(handle, "ncclAllReduce");
        reduceScatter = (delegate* unmanaged<IntPtr, IntPtr, nuint, NcclDataType, NcclRedOp, IntPtr, IntPtr, NcclResult>)Require(handle, "ncclReduceScatter");
        allGather = (delegate* unmanaged<IntPtr, IntPtr, nuint, NcclDataType, IntPtr, IntPtr, NcclResult>)Require(handle, "ncclAllGather");
        broadcast = (delegate* unmanaged<IntPtr, IntPtr, nuint, NcclDataType, int, IntPtr, IntPtr, NcclResult>)Require(handle, "ncclBroadcast");
        groupStart = (delegate* unmanaged<NcclResult>)Require(handle, "ncclGroupStart");
        groupEnd = (delegate* unmanaged<NcclResult>)Require(handle, "ncclGroupEnd");
        commGetAsyncError = (delegate* unmanaged<IntPtr, NcclResult*, NcclResult>)Require(handle, "ncclCommGetAsyncError");
        commAbort = (delegate* unmanaged<IntPtr, NcclResult>)Require(handle, "ncclCommAbort");
        commDestroy = (delegate* unmanaged<IntPtr, NcclResult>)Require(handle, "ncclCommDestroy");
        getErrorString = (delegate* unmanaged<NcclResult, byte*>)Require(handle, "ncclGetErrorString");
        getLastError = NativeLibrary.TryGetExport(handle, "ncclGetLastError", out var last) ? (delegate* unmanaged<IntPtr, byte*>)last : null;
        int code;
        Check("ncclGetVersion", getVersion(&code), IntPtr.Zero);
        Version = NcclMapping.DecodeVersion(code);
    }

    /// <summary>Loads libnccl from <paramref name="path"/> (default: libnccl.so.2 on the loader's search path).</summary>
    public static NcclNativeApi Load(string? path = null)
    {
        path ??= DefaultLibrary;
        if (!NativeLibrary.TryLoad(path, out var handle))
            throw new NcclUnavailableException($"cannot load NCCL from '{path}': install NCCL 2.x (it ships with the CUDA build of PyTorch/libtorch, or as libnccl2), put it on LD_LIBRARY_PATH, or set MELLAMA_NCCL_LIBRARY to its path");
        return new NcclNativeApi(handle, path);
    }

    static IntPtr Require(IntPtr handle, string name) =>
        NativeLibrary.TryGetExport(handle, name, out var f) ? f
            : throw new NcclUnavailableException($"the loaded NCCL library has no {name}; NCCL 2.7 or later is required");

    public NcclUniqueId GetUniqueId()
    {
        NcclUniqueId id;
        Check("ncclGetUniqueId", getUniqueId(&id), IntPtr.Zero);
        return id;
    }

    public IntPtr CommInitRank(int nranks, NcclUniqueId id, int rank)
    {
        IntPtr comm;
        Check("ncclCommInitRank", commInitRank(&comm, nranks, id, rank), IntPtr.Zero);
        return comm;
    }

    public void AllReduce(IntPtr send, IntPtr recv, ulong count, NcclDataType type, NcclRedOp op, IntPtr comm, IntPtr stream) =>
        Check("ncclAllReduce", allReduce(send, recv, (nuint)count, type, op, comm, stream), comm);

    public void ReduceScatter(IntPtr send, IntPtr recv, ulong recvCount, NcclDataType type, NcclRedOp op, IntPtr comm, IntPtr stream) =>
        Check("ncclReduceScatter", reduceScatter(send, recv, (nuint)recvCount, type, op, comm, stream), comm);

    public void AllGather(IntPtr send, IntPtr recv, ulong sendCount, NcclDataType type, IntPtr comm, IntPtr stream) =>
        Check("ncclAllGather", allGather(send, recv, (nuint)sendCount, type, comm, stream), comm);

    public void Broadcast(IntPtr send, IntPtr recv, ulong count, NcclDataType type, int root, IntPtr comm, IntPtr stream) =>
        Check("ncclBroadcast", broadcast(send, recv, (nuint)count, type, root, comm, stream), comm);

    public void GroupStart() => Check("ncclGroupStart", groupStart(), IntPtr.Zero);
    public void GroupEnd() => Check("ncclGroupEnd", groupEnd(), IntPtr.Zero);

    public NcclResult CommGetAsyncError(IntPtr comm)
    {
        NcclResult asyncError;
        Check("ncclCommGetAsyncError", commGetAsyncError(comm, &asyncError), comm);
        return asyncError;
    }

    public void CommAbort(IntPtr comm) => Check("ncclCommAbort", commAbort(comm), IntPtr.Zero);
    public void CommDestroy(IntPtr comm) => Check("ncclCommDestroy", commDestroy(comm), IntPtr.Zero);

    public string GetErrorString(NcclResult result) => Marshal.PtrToStringUTF8((IntPtr)getErrorString(result)) ?? "";

    public string? GetLastError(IntPtr comm) =>
        getLastError == null ? null : Marshal.PtrToStringUTF8((IntPtr)getLastError(comm));

    void Check(string call, NcclResult result, IntPtr comm)
    {
        if (result == NcclResult.Success) return;
        throw new NcclException(call, result, GetErrorString(result), GetLastError(comm));
    }
}
