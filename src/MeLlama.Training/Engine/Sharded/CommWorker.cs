using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;

namespace MeLlama.Training.Engine.Sharded;

/// <summary>
/// One dedicated thread that runs an engine's collectives from a FIFO queue, so that the compute thread can issue
/// the next unit's all-gather and keep computing. Why one thread and a queue rather than "any thread": a
/// communicator must see the same operations in the same order on every rank (<see cref="MeLlama.Distributed.ICollectives"/>
/// is one thread at a time), and the order here is simply the order in which the compute thread enqueued them,
/// which is program order and therefore the same on every rank.
/// <para>Failure: the first operation that throws faults the worker; it and every later (or still queued) item
/// complete with that exception without touching the communicator again (after a failed collective the
/// communicator is unusable anyway), so whoever waits on any of them gets the original error, e.g. the
/// <c>CollectiveException</c> naming the dead rank, within the communicator's own timeout. <see cref="Fault"/>
/// lets the compute thread poison the queue when it fails first, so queued collectives are skipped rather than
/// run against peers that may already be gone.</para>
/// </summary>
sealed class CommWorker : IDisposable
{
    /// <summary>A queued operation: <see cref="Wait"/> returns once it ran, or rethrows what it (or an earlier one) threw.</summary>
    public sealed class Item
    {
        readonly ManualResetEventSlim _done = new(false);
        ExceptionDispatchInfo? _error;

        internal Item(string what, Action run, Action? cleanup)
        {
            What = what;
            Run = run;
            Cleanup = cleanup;
        }

        public string What { get; }
        internal Action Run { get; }
        internal Action? Cleanup { get; }
        public bool IsCompleted => _done.IsSet;

        internal void Complete(ExceptionDispatchInfo? error)
        {
            _error = error;
            _done.Set();
        }

        /// <summary>
        /// Blocks until the item ran. No own deadline: every collective is bounded by the communicator's timeout,
        /// and the worker completes every item it dequeues or drops (see <see cref="CommWorker"/>).
        /// </summary>
        public void Wait()
        {
            _done.Wait();
            _error?.Throw(); // the original exception (type, message, rank) with its worker-side stack
        }
    }

    readonly BlockingCollection<Item> _queue = new(new ConcurrentQueue<Item>());
    readonly Thread _thread;
    ExceptionDispatchInfo? _fault; // set once (CompareExchange), read with Volatile.Read

    readonly Action? _threadStart;

    /// <param name="threadStart">Runs first on the worker thread, before any queued item: binds the rank's CUDA device
    /// there (<see cref="CudaThreadDevice"/>), because a new thread's current device is device 0 whatever the rank's.
    /// If it throws, the worker is faulted with that exception: every item fails with it.</param>
    public CommWorker(string name, Action? threadStart = null)
    {
        _threadStart = threadStart;
        // Background: a collective stuck past every timeout must never keep the process alive.
        _thread = new Thread(Loop) { IsBackground = true, Name = name };
        _thread.Start();
    }

    /// <summary>
    /// Queues <paramref name="run"/> (a collective, possibly followed by tensor work on its result) behind every
    /// item queued before it. <paramref name="cleanup"/> runs on the worker after <paramref name="run"/>, or
    /// instead of it when the worker is faulted, so buffers the operation uses are freed only when nothing can still
    /// write into them.
    /// </summary>
    public Item Enqueue(string what, Action run, Action? cleanup = null)
    {
        var item = new Item(what, run, cleanup);
        try { _queue.Add(item); }
        catch (InvalidOperationException) // adding completed: disposed
        {
            Finish(item, ExceptionDispatchInfo.Capture(new ObjectDisposedException(nameof(CommWorker), $"the communication worker is shut down; cannot run {what}")));
        }
        return item;
    }

    /// <summary>Queues <paramref name="run"/> and waits for it (and so for everything queued before it).</summary>
    public void Run(string what, Action run) => Enqueue(what, run).Wait();

    /// <summary>Waits until everything queued so far has run; rethrows the worker's fault.</summary>
    public void Drain() => Run("drain", () => { });

    /// <summary>From now on queued items fail with <paramref name="error"/> without running (the first fault wins).</summary>
    public void Fault(Exception error)
    {
        var info = ExceptionDispatchInfo.Capture(error);
        Interlocked.CompareExchange(ref _fault, info, null);
    }

    void Loop()
    {
        try { _threadStart?.Invoke(); }
        catch (Exception e) { Fault(e); }
        foreach (var item in _queue.GetConsumingEnumerable())
        {
            var fault = Volatile.Read(ref _fault);
            if (fault is null)
            {
                try { item.Run(); }
                catch (Exception e)
                {
                    fault = ExceptionDispatchInfo.Capture(e);
                    Interlocked.CompareExchange(ref _fault, fault, null);
                    fault = Volatile.Read(ref _fault);
                }
            }
            Finish(item, fault);
        }
    }

    static void Finish(Item item, ExceptionDispatchInfo? error)
    {
        try { item.Cleanup?.Invoke(); }
        catch (Exception) { /* freeing a buffer must not hide the collective's own outcome */ }
        item.Complete(error);
    }

    /// <summary>
    /// Stops taking work, fails what is still queued, and waits for the operation in flight, which ends within the
    /// communicator's timeout (<paramref name="maxWait"/> bounds the wait regardless; the thread is a background one).
    /// </summary>
    /// <returns>False when the operation in flight did not end in time (its buffers must then be left alone).</returns>
    public bool Shutdown(TimeSpan maxWait)
    {
        Fault(new ObjectDisposedException(nameof(CommWorker), "the engine was disposed while collectives were queued"));
        try { _queue.CompleteAdding(); } catch (ObjectDisposedException) { }
        return _thread.Join(maxWait);
    }

    public void Dispose() => Shutdown(TimeSpan.FromSeconds(30));
}
