using System.Runtime.InteropServices;

namespace MeLlama.Distributed.Nccl;

/// <summary>
/// <see cref="IDeviceSync"/> on the CUDA driver API (libcuda.so.1, installed with every NVIDIA driver):
/// binds the device's primary context (the one libtorch's runtime uses) and polls an event recorded on
/// the legacy default stream (handle 0), which is where libtorch launches its kernels and where we
/// enqueue NCCL operations, so completion of the event means completion of the collective.
/// </summary>
public sealed unsafe class CudaDriverSync : IDeviceSync
{
    const int CudaSuccess = 0, CudaErrorNotReady = 600;
    const uint EventDisableTiming = 0x2;

    readonly delegate* unmanaged<uint, int> cuInit;
    readonly delegate* unmanaged<int*, int, int> cuDeviceGet;
    readonly delegate* unmanaged<IntPtr*, int, int> cuDevicePrimaryCtxRetain;
    readonly delegate* unmanaged<int, int> cuDevicePrimaryCtxRelease;
    readonly delegate* unmanaged<IntPtr, int> cuCtxSetCurrent;
    readonly delegate* unmanaged<IntPtr*, uint, int> cuEventCreate;
    readonly delegate* unmanaged<IntPtr, IntPtr, int> cuEventRecord;
    readonly delegate* unmanaged<IntPtr, int> cuEventQuery;
    readonly delegate* unmanaged<IntPtr, int> cuEventDestroy;
    readonly delegate* unmanaged<int, byte**, int> cuGetErrorString;

    readonly int device;
    readonly IntPtr context;
    IntPtr cudaEvent;

    public CudaDriverSync(int deviceIndex)
    {
        if (!NativeLibrary.TryLoad("libcuda.so.1", out var lib))
            throw new NcclUnavailableException("cannot load libcuda.so.1 (the NVIDIA driver): the NCCL backend needs a GPU node");
        cuInit = (delegate* unmanaged<uint, int>)Export(lib, "cuInit");
        cuDeviceGet = (delegate* unmanaged<int*, int, int>)Export(lib, "cuDeviceGet");
        cuDevicePrimaryCtxRetain = (delegate* unmanaged<IntPtr*, int, int>)Export(lib, "cuDevicePrimaryCtxRetain");
        cuDevicePrimaryCtxRelease = (delegate* unmanaged<int, int>)Export(lib, "cuDevicePrimaryCtxRelease_v2");
        cuCtxSetCurrent = (delegate* unmanaged<IntPtr, int>)Export(lib, "cuCtxSetCurrent");
        cuEventCreate = (delegate* unmanaged<IntPtr*, uint, int>)Export(lib, "cuEventCreate");
        cuEventRecord = (delegate* unmanaged<IntPtr, IntPtr, int>)Export(lib, "cuEventRecord");
        cuEventQuery = (delegate* unmanaged<IntPtr, int>)Export(lib, "cuEventQuery");
        cuEventDestroy = (delegate* unmanaged<IntPtr, int>)Export(lib, "cuEventDestroy_v2");
        cuGetErrorString = (delegate* unmanaged<int, byte**, int>)Export(lib, "cuGetErrorString");

        Check("cuInit", cuInit(0));
        int dev;
        Check("cuDeviceGet", cuDeviceGet(&dev, deviceIndex));
        device = dev;
        IntPtr ctx;
        Check("cuDevicePrimaryCtxRetain", cuDevicePrimaryCtxRetain(&ctx, dev));
        context = ctx;
        MakeCurrent();
        IntPtr ev;
        Check("cuEventCreate", cuEventCreate(&ev, EventDisableTiming));
        cudaEvent = ev;
    }

    static IntPtr Export(IntPtr lib, string name) =>
        NativeLibrary.TryGetExport(lib, name, out var f) ? f : throw new NcclUnavailableException($"libcuda.so.1 has no {name}: the NVIDIA driver is too old");

    public void MakeCurrent() => Check("cuCtxSetCurrent", cuCtxSetCurrent(context));

    public void Record() => Check("cuEventRecord", cuEventRecord(cudaEvent, IntPtr.Zero));

    public bool IsComplete()
    {
        int r = cuEventQuery(cudaEvent);
        if (r == CudaSuccess) return true;
        if (r == CudaErrorNotReady) return false;
        Check("cuEventQuery", r);
        return false;
    }

    void Check(string call, int result)
    {
        if (result == CudaSuccess) return;
        byte* text = null;
        cuGetErrorString(result, &text);
        throw new InvalidOperationException($"{call} failed with CUDA error {result} ({(text == null ? "?" : Marshal.PtrToStringUTF8((IntPtr)text))})");
    }

    public void Dispose()
    {
        if (cudaEvent != IntPtr.Zero) cuEventDestroy(cudaEvent);
        cudaEvent = IntPtr.Zero;
        cuDevicePrimaryCtxRelease(device);
    }
}
