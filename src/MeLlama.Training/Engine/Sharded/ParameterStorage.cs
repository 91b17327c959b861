using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Training.Engine.Sharded;

/// <summary>
/// Re-points a parameter at other storage while keeping the same <see cref="TorchSharp.Modules.Parameter"/> object
/// (modules, autograd and <c>named_parameters()</c> keep seeing it): torch's <c>param.set_(source)</c>, which
/// TorchSharp 0.107 exposes as <see cref="Tensor.set_(Tensor)"/> (it returns the same object). A full-shard unit
/// uses it to release its full-size parameters between uses: point them at an empty tensor (the gathered storage
/// is freed once autograd no longer references it) and, on the next gather, at views of the freshly gathered flat
/// buffer (no copy).
/// </summary>
static partial class ParameterStorage
{
    /// <summary><paramref name="target"/> takes <paramref name="source"/>'s storage, offset, sizes and strides, without autograd history.</summary>
    public static void Set(Tensor target, Tensor source)
    {
        if (target.dtype != source.dtype || target.device_type != source.device_type)
            throw new ArgumentException($"cannot point a {target.dtype} {target.device_type} tensor at {source.dtype} {source.device_type} storage");
        using var _ = no_grad();
        target.set_(source);
    }

    // The managed Tensor has no storage-size query; this is the entry point TorchSharp 0.107 itself binds
    // (NativeMethods.THSStorage_nbytes: UInt64(IntPtr)), returning tensor->storage().nbytes().
    [LibraryImport("LibTorchSharp")]
    private static partial ulong THSStorage_nbytes(IntPtr tensor);

    /// <summary>Bytes of the whole storage <paramref name="tensor"/> points into (0 once it has been released).</summary>
    public static long StorageBytes(Tensor tensor) => (long)THSStorage_nbytes(tensor.Handle);
}
