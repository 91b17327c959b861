using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using MeLlama.Distributed.Nccl;
using MeLlama.Distributed.Store;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Distributed.Tests;

/// <summary>
/// The NCCL binding without a GPU: constants and struct layout against nccl.h, and real P/Invoke calls
/// into a C library with nccl.h's exact signatures that records what arrived (pointers, counts, enum
/// values, the by-value 128-byte id) and can fail on demand. One class, so the fake's global state is never shared across parallel tests.
/// </summary>
public sealed class NcclMarshallingTests(FakeNcclLibrary fake) : IClassFixture<FakeNcclLibrary>
{
    [Fact]
    public unsafe void UniqueIdIs128BlittableBytes()
    {
        Assert.Equal(128, sizeof(NcclUniqueId));
        Assert.Equal(128, Marshal.SizeOf<NcclUniqueId>());
        var bytes = Enumerable.Range(0, 128).Select(i => (byte)(255 - i)).ToArray();
        Assert.Equal(bytes, NcclUniqueId.FromBytes(bytes).ToArray());
        Assert.Throws<ArgumentException>(() => NcclUniqueId.FromBytes(new byte[127]));
    }

    [Fact]
    public void EnumValuesMatchNcclHeader()
    {
        // From nccl.h (2.18-2.23): ncclResult_t, ncclDataType_t, ncclRedOp_t.
        Assert.Equal([0, 1, 2, 3, 4, 5, 6, 7], new[] { NcclResult.Success, NcclResult.UnhandledCudaError, NcclResult.SystemError, NcclResult.InternalError, NcclResult.InvalidArgument, NcclResult.InvalidUsage, NcclResult.RemoteError, NcclResult.InProgress }.Select(v => (int)v));
        Assert.Equal([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], new[] { NcclDataType.Int8, NcclDataType.Uint8, NcclDataType.Int32, NcclDataType.Uint32, NcclDataType.Int64, NcclDataType.Uint64, NcclDataType.Float16, NcclDataType.Float32, NcclDataType.Float64, NcclDataType.Bfloat16 }.Select(v => (int)v));
        Assert.Equal([0, 1, 2, 3, 4], new[] { NcclRedOp.Sum, NcclRedOp.Prod, NcclRedOp.Max, NcclRedOp.Min, NcclRedOp.Avg }.Select(v => (int)v));
        Assert.Equal(sizeof(int), Marshal.SizeOf(Enum.GetUnderlyingType(typeof(NcclDataType))));
    }

    [Theory]
    [InlineData(ScalarType.Float32, NcclDataType.Float32)]
    [InlineData(ScalarType.BFloat16, NcclDataType.Bfloat16)]
    [InlineData(ScalarType.Float16, NcclDataType.Float16)]
    [InlineData(ScalarType.Float64, NcclDataType.Float64)]
    [InlineData(ScalarType.Int64, NcclDataType.Int64)]
    [InlineData(ScalarType.Int32, NcclDataType.Int32)]
    [InlineData(ScalarType.Bool, NcclDataType.Uint8)]
    public void TorchTypesMapToNcclTypes(ScalarType torchType, NcclDataType expected) => Assert.Equal(expected, NcclMapping.DataType(torchType));

    [Theory]
    [InlineData(22103, "2.21.3", true)]
    [InlineData(21003, "2.10.3", true)]
    [InlineData(2708, "2.7.8", false)]
    [InlineData(20906, "2.9.6", false)]
    public void VersionCodesDecode(int code, string expected, bool avg)
    {
        Assert.Equal(Version.Parse(expected), NcclMapping.DecodeVersion(code));
        Assert.Equal(avg, NcclMapping.SupportsAvg(NcclMapping.DecodeVersion(code)));
    }

    [Fact]
    public void MissingLibraryIsExplained()
    {
        var e = Assert.Throws<NcclUnavailableException>(() => NcclNativeApi.Load("/nonexistent/libnccl.so.2"));
        Assert.Contains("MELLAMA_NCCL_LIBRARY", e.Message);
    }

    [Fact]
    public void LibraryWithoutNcclFunctionsIsRefused()
    {
        var e = Assert.Throws<NcclUnavailableException>(() => NcclNativeApi.Load("libc.so.6"));
        Assert.Contains("ncclGetVersion", e.Message);
    }

    NcclNativeApi Api()
    {
        Skip.If(fake.Path == null, fake.Unavailable);
        fake.Reset();
        return NcclNativeApi.Load(fake.Path);
    }

    [SkippableFact]
    public void UniqueIdAndCommInitRankCrossTheBoundaryIntact()
    {
        var api = Api();
        Assert.Equal(new Version(2, 21, 3), api.Version);
        var id = api.GetUniqueId().ToArray();
        Assert.Equal(Enumerable.Range(0, 128).Select(i => (byte)(i * 7 + 3)), id);

        var custom = NcclUniqueId.FromBytes(Enumerable.Range(0, 128).Select(i => (byte)(i ^ 0x5A)).ToArray());
        var comm = api.CommInitRank(4, custom, 3);
        var call = fake.Last;
        Assert.Equal("ncclCommInitRank", call.Name);
        Assert.Equal((4, 3), (call.NRanks, call.Rank));
        uint checksum = 0;
        for (int i = 0; i < 128; i++) checksum += (uint)(i ^ 0x5A) * (uint)(i + 1);
        Assert.Equal(checksum, call.IdChecksum); // the struct was passed by value, all 128 bytes in order
        Assert.Equal((IntPtr)0x1003, comm);
    }

    [SkippableFact]
    public void CollectiveArgumentsArriveAsNcclExpectsThem()
    {
        var api = Api();
        using var scope = NewDisposeScope();
        var send = arange(10, dtype: ScalarType.Float32);
        var recv = zeros(10);
        IntPtr s = TensorMemory.DataPointer(send), r = TensorMemory.DataPointer(recv);

        api.AllReduce(s, r, 10, NcclDataType.Bfloat16, NcclRedOp.Avg, 0x1001, 0x77);
        var call = fake.Last;
        Assert.Equal(("ncclAllReduce", 10UL, 9, 4), (call.Name, call.Count, call.DataType, call.Op));
        Assert.Equal((s, r, (IntPtr)0x1001, (IntPtr)0x77), (call.Send, call.Recv, call.Comm, call.Stream));

        api.ReduceScatter(s, r, 5, NcclDataType.Float32, NcclRedOp.Max, 0x1001, 0);
        Assert.Equal(("ncclReduceScatter", 5UL, 7, 2), (fake.Last.Name, fake.Last.Count, fake.Last.DataType, fake.Last.Op));
        api.AllGather(s, r, 3, NcclDataType.Int64, 0x1001, 0);
        Assert.Equal(("ncclAllGather", 3UL, 4), (fake.Last.Name, fake.Last.Count, fake.Last.DataType));
        api.Broadcast(s, r, 10, NcclDataType.Float32, 2, 0x1001, 0);
        Assert.Equal(("ncclBroadcast", 2), (fake.Last.Name, fake.Last.Root));
        Assert.Equal(send.data<float>().ToArray(), recv.data<float>().ToArray()); // the fake copied through our pointers
        api.GroupStart();
        Assert.Equal("ncclGroupStart", fake.Last.Name);
        api.GroupEnd();
        Assert.Equal("ncclGroupEnd", fake.Last.Name);
    }

    [SkippableFact]
    public void ErrorCodesBecomeExceptionsWithNcclsMessages()
    {
        var api = Api();
        fake.FailNext(FakeNcclLibrary.NcclResultCode.InvalidArgument);
        var e = Assert.Throws<NcclException>(() => api.AllReduce(0, 0, 1, NcclDataType.Float32, NcclRedOp.Sum, 0x1000, 0));
        Assert.Equal(NcclResult.InvalidArgument, e.Result);
        Assert.Equal("ncclAllReduce", e.Call);
        Assert.Contains("ncclInvalidArgument", e.Message);
        Assert.Contains("fake: invalid argument", e.Message);
        Assert.Contains("fake last error detail", e.Message);
        Assert.Equal("fake: remote process exited or there was a network error", api.GetErrorString(NcclResult.RemoteError));
        fake.SetAsyncError(FakeNcclLibrary.NcclResultCode.RemoteError);
        Assert.Equal(NcclResult.RemoteError, api.CommGetAsyncError(0x1000));
    }

    // ---- the communicator's logic over the fake, one rank, CPU tensors ----

    sealed class FakeSync(bool completes) : IDeviceSync
    {
        public int Records;
        public void MakeCurrent() { }
        public void Record() => Records++;
        public bool IsComplete() => completes;
        public void Dispose() { }
    }

    (NcclCollectives Comm, TcpStoreServer Server, FakeSync Sync) Communicator(bool completes = true, TimeSpan? timeout = null, int versionCode = 22103)
    {
        Skip.If(fake.Path == null, fake.Unavailable);
        fake.Reset();
        fake.SetVersion(versionCode);
        var api = NcclNativeApi.Load(fake.Path);
        var (secret, _) = JobSecret.Generate();
        var server = TcpStoreServer.Start(IPAddress.Loopback, 0, secret);
        var group = ProcessGroup.Join("127.0.0.1", server.EndPoint.Port, secret, "nccl-test", 0, 1, TimeSpan.FromSeconds(10));
        var sync = new FakeSync(completes);
        var options = new CollectivesOptions { Timeout = timeout ?? TimeSpan.FromSeconds(30) };
        return (NcclCollectives.Connect(group, options, 0, api, sync, requireCuda: false), server, sync);
    }

    [SkippableFact]
    public void CommunicatorPassesTensorPointersCountsAndTypes()
    {
        var (comm, server, sync) = Communicator();
        using var _ = server;
        using (comm)
        {
            using var scope = NewDisposeScope();
            Assert.Equal("ncclCommInitRank", fake.Last.Name);
            Assert.Equal((1, 0), (fake.Last.NRanks, fake.Last.Rank));

            var flat = arange(100, dtype: ScalarType.BFloat16);
            var view = flat.narrow(0, 10, 40);
            comm.AllReduce(view, ReduceOp.Avg);
            var call = fake.Last;
            Assert.Equal(("ncclAllReduce", 40UL, (int)NcclDataType.Bfloat16, (int)NcclRedOp.Avg), (call.Name, call.Count, call.DataType, call.Op));
            Assert.Equal(TensorMemory.DataPointer(flat) + 10 * 2, call.Send); // storage offset × element size
            Assert.Equal(call.Send, call.Recv);
            Assert.Equal(IntPtr.Zero, call.Stream); // the legacy default stream, where libtorch's kernels run
            Assert.Equal(1, sync.Records);

            var input = arange(6, dtype: ScalarType.Float32);
            var output = zeros(6);
            comm.ReduceScatter(input, output, ReduceOp.Max);
            Assert.Equal(("ncclReduceScatter", 6UL, (int)NcclRedOp.Max), (fake.Last.Name, fake.Last.Count, fake.Last.Op));
            Assert.Equal(input.data<float>().ToArray(), output.data<float>().ToArray());

            comm.AllGather(arange(3, dtype: ScalarType.Int64), zeros(3, dtype: ScalarType.Int64));
            Assert.Equal(("ncclAllGather", 3UL, (int)NcclDataType.Int64), (fake.Last.Name, fake.Last.Count, fake.Last.DataType));

            comm.Broadcast(ones(7, dtype: ScalarType.Bool), 0);
            Assert.Equal(("ncclBroadcast", 7UL, (int)NcclDataType.Uint8, 0), (fake.Last.Name, fake.Last.Count, fake.Last.DataType, fake.Last.Root));

            comm.Barrier();
            Assert.Equal(("ncclAllReduce", 1UL, (int)NcclDataType.Float32), (fake.Last.Name, fake.Last.Count, fake.Last.DataType));
        }
        Assert.Equal("ncclCommDestroy", fake.Last.Name);
    }

    [SkippableFact]
    public void AverageIsEmulatedBeforeNccl210()
    {
        var (comm, server, _) = Communicator(versionCode: 20906);
        using var _ = server;
        using var __ = comm;
        using var scope = NewDisposeScope();
        var t = ones(4);
        comm.AllReduce(t, ReduceOp.Avg);
        Assert.Equal((int)NcclRedOp.Sum, fake.Last.Op);
        Assert.Equal(1f, t[0].item<float>()); // sum over one rank, divided by one
    }

    [SkippableFact]
    public void AsyncErrorFailsTheCallAndAbortsTheCommunicator()
    {
        var (comm, server, _) = Communicator(completes: false);
        using var _ = server;
        using var __ = comm;
        fake.SetAsyncError(FakeNcclLibrary.NcclResultCode.RemoteError);
        var e = Assert.Throws<CollectiveException>(() => comm.AllReduce(ones(4)));
        Assert.Contains("ncclRemoteError", e.Message);
        Assert.Contains("fake last error detail", e.Message);
        Assert.Equal("ncclCommAbort", fake.Last.Name);
        Assert.Contains("failed earlier", Assert.Throws<CollectiveException>(() => comm.Barrier()).Message);
    }

    [SkippableFact]
    public void WorkThatNeverCompletesTimesOut()
    {
        var (comm, server, _) = Communicator(completes: false, timeout: TimeSpan.FromMilliseconds(500));
        using var _ = server;
        using var __ = comm;
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<CollectiveException>(() => comm.AllReduce(ones(4)));
        Assert.True(e.IsTimeout);
        Assert.Contains("timed out", e.Message);
        Assert.InRange(clock.Elapsed.TotalSeconds, 0.5, 10);
        Assert.Equal("ncclCommAbort", fake.Last.Name);
    }

    [SkippableFact]
    public void EnqueueErrorFailsTheCall()
    {
        var (comm, server, _) = Communicator();
        using var _ = server;
        using var __ = comm;
        fake.FailNext(FakeNcclLibrary.NcclResultCode.InvalidUsage);
        var e = Assert.Throws<CollectiveException>(() => comm.AllReduce(ones(4)));
        Assert.Contains("ncclInvalidUsage", e.Message);
        Assert.Equal("ncclCommAbort", fake.Last.Name);
    }
}
