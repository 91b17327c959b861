using System.Reflection;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Distributed;

/// <summary>
/// Raw data addresses of TorchSharp tensors, for handing them to sockets and NCCL without copies.
/// TorchSharp 0.107 has no public dtype-agnostic data pointer: <c>Storage&lt;T&gt;.data_ptr()</c> exists
/// only for a few element types and converts others (bf16) into a copy, and <c>Tensor.bytes</c> is CPU-only
/// and limited to 2 GiB. The native <c>THSTensor_data</c> that <c>Tensor.bytes</c> itself calls returns
/// <c>at::Tensor::data_ptr()</c> (storage base + offset; a device address for CUDA tensors) for every
/// dtype, so we bind TorchSharp's own P/Invoke stub for it once.
/// </summary>
public static class TensorMemory
{
    static readonly Func<IntPtr, IntPtr> NativeData = BindNativeData();

    static Func<IntPtr, IntPtr> BindNativeData()
    {
        var method = typeof(torch).Assembly.GetType("TorchSharp.PInvoke.NativeMethods")
            ?.GetMethod("THSTensor_data", BindingFlags.Static | BindingFlags.NonPublic | BindingFlags.Public, [typeof(IntPtr)]);
        if (method == null)
            return _ => throw new NotSupportedException("this TorchSharp version has no THSTensor_data; MeLlama.Distributed supports TorchSharp 0.107");
        return method.CreateDelegate<Func<IntPtr, IntPtr>>();
    }

    /// <summary>Address of the first element of a contiguous tensor (host or device memory).</summary>
    public static IntPtr DataPointer(Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (!tensor.is_contiguous()) throw new ArgumentException("collectives need contiguous tensors (call .contiguous() or use a flat buffer)", nameof(tensor));
        if (tensor.NumberOfElements == 0) return IntPtr.Zero;
        var ptr = NativeData(tensor.Handle);
        if (ptr == IntPtr.Zero) throw new InvalidOperationException("TorchSharp returned no data pointer for a non-empty tensor");
        return ptr;
    }

    public static long ByteCount(Tensor tensor) => tensor.NumberOfElements * tensor.ElementSize;
}
