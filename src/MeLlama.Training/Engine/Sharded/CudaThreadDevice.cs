using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Training.Engine.Sharded;

/// <summary>
/// Makes a rank's CUDA device current on another thread (the engine's communication thread). A new thread starts on
/// device 0 whatever the rank's device is, so NCCL calls or kernels issued there without a device guard would land
/// on (and create a context on) GPU 0. TorchSharp 0.107 has no <c>torch.cuda.set_device</c>, so this does what
/// <c>cudaSetDevice</c> does, through the driver API (libcuda.so.1, present wherever the NVIDIA driver is, the
/// library the NCCL backend's <c>CudaDriverSync</c> also binds): retain the device's primary context, the one
/// libtorch's runtime uses, and make it current on the calling thread; the runtime then uses that device there.
/// The library is resolved only when the action runs, so CPU builds and CPU runs never load it.
/// </summary>
public static unsafe class CudaThreadDevice
{
    /// <summary>
    /// The action that binds <paramref name="device"/> on the thread that runs it, or null when there is nothing to
    /// bind (a CPU or meta device).
    /// </summary>
    public static Action? BinderFor(Device device) =>
        device.type == DeviceType.CUDA ? () => MakeCurrent(Math.Max(0, (int)device.index)) : null;

    /// <summary>Makes CUDA device <paramref name="index"/>'s primary context current on the calling thread.</summary>
    public static void MakeCurrent(int index)
    {
        if (!NativeLibrary.TryLoad("libcuda.so.1", out var lib))
            throw new InvalidOperationException("cannot load libcuda.so.1 (the NVIDIA driver) to bind the communication thread to its GPU");
        var cuInit = (delegate* unmanaged<uint, int>)Export(lib, "cuInit");
        var cuDeviceGet = (delegate* unmanaged<int*, int, int>)Export(lib, "cuDeviceGet");
        var cuDevicePrimaryCtxRetain = (delegate* unmanaged<IntPtr*, int, int>)Export(lib, "cuDevicePrimaryCtxRetain");
        var cuCtxSetCurrent = (delegate* unmanaged<IntPtr, int>)Export(lib, "cuCtxSetCurrent");
        Check("cuInit", cuInit(0));
        int dev;
        Check("cuDeviceGet", cuDeviceGet(&dev, index));
        // The retain is never released: libtorch holds the same primary context for the life of the process anyway.
        IntPtr context;
        Check("cuDevicePrimaryCtxRetain", cuDevicePrimaryCtxRetain(&context, dev));
        Check("cuCtxSetCurrent", cuCtxSetCurrent(context));
    }

    static IntPtr Export(IntPtr lib, string name) =>
        NativeLibrary.TryGetExport(lib, name, out var f) ? f : throw new InvalidOperationException($"libcuda.so.1 has no {name}: the NVIDIA driver is too old");

    static void Check(string call, int result)
    {
        if (result != 0) throw new InvalidOperationException($"{call} failed with CUDA error {result} while binding the communication thread to its GPU");
    }
}
