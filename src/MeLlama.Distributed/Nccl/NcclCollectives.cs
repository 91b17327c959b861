using System.Diagnostics;
using MeLlama.Distributed.Store;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Distributed.Nccl;

/// <summary>
/// Collectives on CUDA tensors through NCCL. Rank 0 creates the NCCL unique id and shares it through the
/// rendezvous store. Operations are enqueued on the legacy default stream (libtorch's stream, so they are
/// ordered after the kernels that produced their inputs), then completion is polled with a CUDA event
/// while watching the call's deadline, NCCL's asynchronous error and the group's abort notice; on any of
/// those the communicator is aborted (ncclCommAbort also frees the GPU from a stuck kernel).
/// </summary>
public sealed class NcclCollectives : ICollectives
{
    readonly ProcessGroup group;
    readonly bool ownsGroup;
    readonly INcclApi api;
    readonly IDeviceSync sync;
    readonly int device;
    readonly bool requireCuda;
    readonly CollectivesOptions options;
    readonly bool nativeAvg;
    IntPtr comm;
    long sequence;
    int busy;
    CollectiveException? broken;
    Tensor? barrierBuffer;
    int disposed;

    public int Rank => group.Rank;
    public int WorldSize => group.WorldSize;
    public string Backend => "nccl";
    public TimeSpan Timeout => options.Timeout;
    public Version NcclVersion => api.Version;

    NcclCollectives(ProcessGroup group, bool ownsGroup, INcclApi api, IDeviceSync sync, int device, IntPtr comm, CollectivesOptions options, bool requireCuda)
    {
        this.group = group;
        this.ownsGroup = ownsGroup;
        this.api = api;
        this.sync = sync;
        this.device = device;
        this.comm = comm;
        this.options = options;
        this.requireCuda = requireCuda;
        nativeAvg = NcclMapping.SupportsAvg(api.Version);
    }

    /// <summary>Loads libnccl and the CUDA driver, and creates the communicator for <paramref name="cudaDevice"/>.</summary>
    public static NcclCollectives Connect(ProcessGroup group, CollectivesOptions options, int cudaDevice, bool ownsGroup = true)
    {
        var api = NcclNativeApi.Load(options.NcclLibrary);
        var sync = new CudaDriverSync(cudaDevice);
        try
        {
            return Connect(group, options, cudaDevice, api, sync, requireCuda: true, ownsGroup);
        }
        catch
        {
            sync.Dispose();
            throw;
        }
    }

    /// <summary>With injectable NCCL and device bindings (tests use fakes and CPU tensors: <paramref name="requireCuda"/> false).</summary>
    internal static NcclCollectives Connect(ProcessGroup group, CollectivesOptions options, int cudaDevice, INcclApi api, IDeviceSync sync, bool requireCuda, bool ownsGroup = true)
    {
        sync.MakeCurrent();
        string idKey = $"{group.Group}/nccl/id";
        NcclUniqueId id;
        if (group.Rank == 0)
        {
            id = api.GetUniqueId();
            group.Store.Set(idKey, id.ToArray());
        }
        else
        {
            try { id = NcclUniqueId.FromBytes(group.Store.Get(idKey, group.ConnectTimeout)); }
            catch (TimeoutException e) { throw new CollectiveException($"rank {group.Rank} did not receive the NCCL id from rank 0 within {group.ConnectTimeout.TotalSeconds:0} s", 0, isTimeout: true, inner: e); }
        }
        group.Log.Information("NCCL {Version} on cuda:{Device}: initialising rank {Rank} of {World}", api.Version, cudaDevice, group.Rank, group.WorldSize);
        var comm = InitWithTimeout(group, api, sync, id);
        return new NcclCollectives(group, ownsGroup, api, sync, cudaDevice, comm, options, requireCuda);
    }

    /// <summary>
    /// ncclCommInitRank blocks until every rank has called it. It runs on a background thread so that a
    /// missing rank, the group's abort notice or the timeout end the wait with a clear error.
    /// </summary>
    static IntPtr InitWithTimeout(ProcessGroup group, INcclApi api, IDeviceSync sync, NcclUniqueId id)
    {
        IntPtr comm = IntPtr.Zero;
        Exception? error = null;
        var done = new ManualResetEventSlim();
        var thread = new Thread(() =>
        {
            try
            {
                sync.MakeCurrent();
                comm = api.CommInitRank(group.WorldSize, id, group.Rank);
            }
            catch (Exception e) { error = e; }
            finally { done.Set(); }
        }) { IsBackground = true, Name = "nccl-init" };
        thread.Start();
        int signalled = WaitHandle.WaitAny([done.WaitHandle, group.AbortToken.WaitHandle], group.ConnectTimeout);
        if (signalled == 0)
        {
            if (error != null) throw new CollectiveException($"rank {group.Rank}: ncclCommInitRank failed: {error.Message}", inner: error);
            return comm;
        }
        if (group.Notice is { } notice)
            throw new CollectiveException($"rank {group.Rank}: NCCL initialisation interrupted: {notice.Reason}", notice.FailedRank >= 0 ? notice.FailedRank : null);
        throw new CollectiveException($"rank {group.Rank}: ncclCommInitRank did not complete within {group.ConnectTimeout.TotalSeconds:0} s: a rank did not start, or NCCL cannot reach it (check NCCL_SOCKET_IFNAME / NCCL_IB_HCA; NCCL_DEBUG=INFO explains)", isTimeout: true);
    }

    public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum, TimeSpan? timeout = null)
    {
        CollectiveArgs.CheckReducible(tensor, nameof(tensor), DeviceRequirement);
        CheckDevice(tensor);
        var ptr = TensorMemory.DataPointer(tensor);
        var type = NcclMapping.DataType(tensor.dtype);
        bool emulateAvg = op == ReduceOp.Avg && !nativeAvg;
        var ncclOp = emulateAvg ? NcclRedOp.Sum : NcclMapping.RedOp(op);
        Run($"all_reduce {op.ToString().ToLowerInvariant()} of {tensor.NumberOfElements} {tensor.dtype} elements", timeout,
            stream => api.AllReduce(ptr, ptr, (ulong)tensor.NumberOfElements, type, ncclOp, comm, stream));
        if (emulateAvg) DivideInPlace(tensor);
    }

    public void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum, TimeSpan? timeout = null)
    {
        CollectiveArgs.CheckReduceScatter(input, output, WorldSize, DeviceRequirement);
        CheckDevice(input);
        var inPtr = TensorMemory.DataPointer(input);
        var outPtr = TensorMemory.DataPointer(output);
        CollectiveArgs.CheckOwnSliceOrDisjoint(inPtr, TensorMemory.ByteCount(input), outPtr, TensorMemory.ByteCount(output), Rank, "reduce_scatter output");
        var type = NcclMapping.DataType(input.dtype);
        bool emulateAvg = op == ReduceOp.Avg && !nativeAvg;
        var ncclOp = emulateAvg ? NcclRedOp.Sum : NcclMapping.RedOp(op);
        Run($"reduce_scatter {op.ToString().ToLowerInvariant()} into {output.NumberOfElements} {input.dtype} elements", timeout,
            stream => api.ReduceScatter(inPtr, outPtr, (ulong)output.NumberOfElements, type, ncclOp, comm, stream));
        if (emulateAvg) DivideInPlace(output);
    }

    public void AllGather(Tensor input, Tensor output, TimeSpan? timeout = null)
    {
        CollectiveArgs.CheckAllGather(input, output, WorldSize, DeviceRequirement);
        CheckDevice(input);
        var inPtr = TensorMemory.DataPointer(input);
        var outPtr = TensorMemory.DataPointer(output);
        CollectiveArgs.CheckOwnSliceOrDisjoint(outPtr, TensorMemory.ByteCount(output), inPtr, TensorMemory.ByteCount(input), Rank, "all_gather input");
        var type = NcclMapping.DataType(input.dtype);
        Run($"all_gather of {input.NumberOfElements} {input.dtype} elements", timeout,
            stream => api.AllGather(inPtr, outPtr, (ulong)input.NumberOfElements, type, comm, stream));
    }

    public void Broadcast(Tensor tensor, int root = 0, TimeSpan? timeout = null)
    {
        CollectiveArgs.CheckTensor(tensor, nameof(tensor), DeviceRequirement);
        CollectiveArgs.CheckRoot(root, WorldSize);
        CheckDevice(tensor);
        var ptr = TensorMemory.DataPointer(tensor);
        var type = NcclMapping.DataType(tensor.dtype);
        Run($"broadcast from rank {root} of {tensor.NumberOfElements} {tensor.dtype} elements", timeout,
            stream => api.Broadcast(ptr, ptr, (ulong)tensor.NumberOfElements, type, root, comm, stream));
    }

    public void Barrier(TimeSpan? timeout = null)
    {
        // NCCL has no barrier; a one-element all-reduce completes only after every rank has joined it.
        barrierBuffer ??= torch.zeros(1, ScalarType.Float32, requireCuda ? new Device(DeviceType.CUDA, device) : CPU);
        var ptr = TensorMemory.DataPointer(barrierBuffer);
        Run("barrier", timeout, stream => api.AllReduce(ptr, ptr, 1, NcclDataType.Float32, NcclRedOp.Sum, comm, stream));
    }

    public void Abort(string reason)
    {
        var standing = group.PostAbort(new AbortNotice(Rank, $"rank {Rank} aborted the job: {reason}"));
        Break(new CollectiveException($"the job was aborted: {standing.Reason}", standing.FailedRank >= 0 ? standing.FailedRank : null));
    }

    DeviceType? DeviceRequirement => requireCuda ? DeviceType.CUDA : null;

    void CheckDevice(Tensor tensor)
    {
        if (requireCuda && tensor.device_index != device)
            throw new ArgumentException($"tensor is on {tensor.device} but this communicator drives cuda:{device}");
    }

    void DivideInPlace(Tensor tensor)
    {
        if (tensor.dtype is ScalarType.Int64 or ScalarType.Int32) tensor.div_(WorldSize, RoundingMode.trunc);
        else tensor.div_(WorldSize);
    }

    void Run(string what, TimeSpan? timeout, Action<IntPtr> enqueue)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        if (Interlocked.Exchange(ref busy, 1) != 0)
            throw new InvalidOperationException("collectives were called from two threads at once; a communicator serves one thread");
        try
        {
            long seq = ++sequence;
            string label = $"{what} (op #{seq})";
            if (broken != null) throw new CollectiveException($"{label} cannot run: this communicator failed earlier ({broken.Message})", broken.FailedRank);
            if (group.Notice is { } early) Fail(label, early);
            var limit = timeout ?? options.Timeout;
            sync.MakeCurrent();
            try { enqueue(IntPtr.Zero); }
            catch (NcclException e) { Fail(label, new AbortNotice(-1, $"rank {Rank}: {e.Message}"), e); }
            sync.Record();
            WaitForCompletion(label, limit);
        }
        finally { Volatile.Write(ref busy, 0); }
    }

    void WaitForCompletion(string label, TimeSpan limit)
    {
        var clock = Stopwatch.StartNew();
        for (int polls = 0; !sync.IsComplete(); polls++)
        {
            var asyncError = api.CommGetAsyncError(comm);
            if (asyncError is not (NcclResult.Success or NcclResult.InProgress))
            {
                // A remote failure usually means a peer died; the store names it if it noticed.
                var reported = group.WaitForNotice(TimeSpan.FromSeconds(2));
                Fail(label, reported ?? new AbortNotice(-1, $"rank {Rank}: NCCL reported {NcclException.Name(asyncError)} ({api.GetErrorString(asyncError)}){LastError()}"));
            }
            if (group.Notice is { } notice) Fail(label, notice);
            if (clock.Elapsed > limit)
            {
                var reported = group.WaitForNotice(TimeSpan.FromSeconds(2));
                Fail(label, reported ?? new AbortNotice(-1, $"rank {Rank} timed out after {limit.TotalSeconds:0.#} s in {label}: a peer is hung or waiting on another rank"), timedOut: reported == null);
            }
            // Spin briefly (small collectives finish in microseconds), then give the cores back.
            if (polls < 100) Thread.SpinWait(50);
            else if (polls < 1000) Thread.Yield();
            else Thread.Sleep(1);
        }
    }

    string LastError() => api.GetLastError(comm) is { Length: > 0 } s ? ": " + s : "";

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    void Fail(string label, AbortNotice notice, Exception? inner = null, bool timedOut = false)
    {
        var standing = group.PostAbort(notice);
        Break(new CollectiveException($"{label} failed on rank {Rank}: {standing.Reason}", standing.FailedRank >= 0 ? standing.FailedRank : null, timedOut, inner));
        throw broken!;
    }

    void Break(CollectiveException reason)
    {
        broken ??= reason;
        if (comm == IntPtr.Zero) return;
        try { api.CommAbort(comm); }
        catch (NcclException e) { group.Log.Warning("ncclCommAbort failed: {Error}", e.Message); }
        comm = IntPtr.Zero;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0) return;
        barrierBuffer?.Dispose();
        if (comm != IntPtr.Zero)
        {
            try { api.CommDestroy(comm); }
            catch (NcclException e) { group.Log.Warning("ncclCommDestroy failed: {Error}", e.Message); }
            comm = IntPtr.Zero;
        }
        sync.Dispose();
        if (ownsGroup) group.Dispose();
    }
}
