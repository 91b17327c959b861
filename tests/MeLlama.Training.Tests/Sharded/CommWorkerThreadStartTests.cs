using MeLlama.Training.Engine.Sharded;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Training.Tests.Sharded;

/// <summary>The communication thread's start hook (where a CUDA rank binds its device) and the device binder.</summary>
public class CommWorkerThreadStartTests
{
    [Fact]
    public void ThreadStartRunsOnTheWorkerThreadBeforeAnyQueuedItem()
    {
        var order = new List<string>();
        int startThread = -1, itemThread = -1;
        using var gate = new ManualResetEventSlim(false);
        using var worker = new CommWorker("test-comm", () =>
        {
            gate.Wait(); // items are queued while the hook is still running: they must wait for it
            startThread = Environment.CurrentManagedThreadId;
            lock (order) order.Add("start");
        });
        var first = worker.Enqueue("first", () =>
        {
            itemThread = Environment.CurrentManagedThreadId;
            lock (order) order.Add("first");
        });
        worker.Enqueue("second", () => { lock (order) order.Add("second"); });
        Assert.False(first.IsCompleted);
        gate.Set();
        worker.Drain();
        Assert.Equal(["start", "first", "second"], order);
        Assert.Equal(startThread, itemThread);
        Assert.NotEqual(Environment.CurrentManagedThreadId, startThread);
    }

    [Fact]
    public void AFailingThreadStartFailsEveryItemWithItsErrorWithoutRunningThem()
    {
        bool ran = false;
        using var worker = new CommWorker("test-comm", () => throw new InvalidOperationException("cannot bind device 3"));
        var item = worker.Enqueue("all_gather", () => ran = true);
        var e = Assert.Throws<InvalidOperationException>(item.Wait);
        Assert.Equal("cannot bind device 3", e.Message);
        Assert.Throws<InvalidOperationException>(worker.Drain);
        Assert.False(ran);
    }

    [Fact]
    public void OnlyCudaDevicesGetABinderAndItLoadsNothingUntilRun()
    {
        Assert.Null(CudaThreadDevice.BinderFor(CPU));
        Assert.Null(CudaThreadDevice.BinderFor(META));
        // Built on a CPU-only machine without touching libcuda: the binder resolves the driver only when it runs.
        Assert.NotNull(CudaThreadDevice.BinderFor(new Device(DeviceType.CUDA, 1)));
    }

    [SkippableFact]
    public void BindingACudaDeviceOnAThreadWorksWhereThereIsAGpu()
    {
        Skip.IfNot(cuda.is_available(), "no CUDA device (CPU build or no GPU)");
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try { CudaThreadDevice.MakeCurrent(cuda.device_count() - 1); }
            catch (Exception e) { error = e; }
        });
        thread.Start();
        thread.Join();
        Assert.Null(error);
    }
}
