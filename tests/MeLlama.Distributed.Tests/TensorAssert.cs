using static TorchSharp.torch;

namespace MeLlama.Distributed.Tests;

static class TensorExtensions
{
    /// <summary>Same shape and element-wise equal (TorchSharp's <c>equal</c> is element-wise, not torch.equal).</summary>
    public static bool SameAs(this Tensor a, Tensor b) =>
        a.shape.SequenceEqual(b.shape) && (a.NumberOfElements == 0 || a.eq(b).all().item<bool>());
}
