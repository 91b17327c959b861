using System.Runtime.CompilerServices;

namespace MeLlama.Inference.Tests;

static class TestSetup
{
    /// <summary>
    /// One torch thread: test models are tiny, and the CI machine runs several test processes on two cores, where
    /// torch's spinning worker threads make each forward pass many times slower.
    /// </summary>
    [ModuleInitializer]
    internal static void SingleThreadedTorch() => TorchSharp.torch.set_num_threads(1);
}
