using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using MeLlama.Distributed;
using MeLlama.Training.Config;
using Serilog;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Training.Loop;

/// <summary>
/// The ranks one training run is spread over, and the few agreements the loop needs from them: every decision that
/// ends or changes the run (stop signal, wall-clock budget, divergence, which checkpoint to resume) is taken on values
/// reduced across ranks, so all ranks take the same branch and no rank waits in a collective the others never enter.
/// With one rank every operation is local and no collective is called.
/// </summary>
public sealed class TrainingWorld : IDisposable
{
    readonly bool _owned;
    /// <summary>Where the small tensors of the loop's own reductions live: NCCL reduces only GPU memory.</summary>
    readonly Device _device;

    /// <summary>The communicator; null on a single process.</summary>
    public ICollectives? Comm { get; }
    public DistributedEnvironment Environment { get; }
    public int Rank => Environment.Rank;
    public int Size => Environment.WorldSize;
    public bool IsDistributed => Size > 1;
    /// <summary>Rank 0 writes what exists once per run: metrics, TensorBoard, plots, the progress line, checkpoint metadata.</summary>
    public bool IsRoot => Rank == 0;

    public TrainingWorld(DistributedEnvironment environment, ICollectives? comm, bool ownsComm, Device? device = null)
    {
        if (environment.IsDistributed && comm is null) throw new ArgumentException("a distributed environment needs a communicator", nameof(comm));
        if (comm != null && (comm.Rank != environment.Rank || comm.WorldSize != environment.WorldSize))
            throw new ArgumentException($"communicator is rank {comm.Rank}/{comm.WorldSize}, environment says {environment.Rank}/{environment.WorldSize}", nameof(comm));
        Environment = environment;
        Comm = comm;
        _owned = ownsComm;
        _device = comm?.Backend == "nccl" ? device ?? throw new ArgumentException("the NCCL backend needs the rank's CUDA device", nameof(device)) : CPU;
    }

    public static TrainingWorld Single() => new(DistributedEnvironment.Single, null, ownsComm: false);

    /// <summary>A world around an existing communicator (in-process tests, or a caller that manages the group itself).</summary>
    public static TrainingWorld Of(ICollectives comm) =>
        new(new DistributedEnvironment(comm.Rank, comm.WorldSize, comm.Rank, comm.WorldSize, "127.0.0.1", 0, LaunchSource.Torchrun), comm, ownsComm: false);

    /// <summary>
    /// Joins the job <paramref name="environment"/> describes (rank 0 hosts the rendezvous store): TCP collectives for CPU
    /// ranks, NCCL when <paramref name="device"/> is a GPU. Blocks until every rank has joined or the connect timeout passes.
    /// </summary>
    public static TrainingWorld Join(DistributedEnvironment environment, Device device, ILogger log)
    {
        if (!environment.IsDistributed) return Single();
        var comm = Collectives.Create(environment, CollectivesOptions.FromEnvironment() with { Logger = log }, device);
        return new TrainingWorld(environment, comm, ownsComm: true, device);
    }

    /// <summary>
    /// The device of this rank: a multi-rank job on GPUs gives each rank the GPU of its local rank (or the only one the
    /// scheduler made visible); a single process keeps the recipe's device.
    /// </summary>
    public static Device ResolveDevice(string spec, DistributedEnvironment environment)
    {
        var device = ModelFactory.ResolveDevice(spec);
        if (!environment.IsDistributed || device.type != DeviceType.CUDA || spec.Contains(':', StringComparison.Ordinal)) return device;
        return new Device(DeviceType.CUDA, environment.CudaDeviceIndex((int)cuda.device_count()));
    }

    /// <summary>
    /// Intra-op threads: the recipe's <c>threads</c>, else OMP_NUM_THREADS (which `mellama launch` sets to cores / ranks),
    /// else the cores shared among this node's ranks, so N ranks on one machine do not each start one thread per core.
    /// </summary>
    public int Threads(int configured)
    {
        if (configured > 0) return configured;
        if (int.TryParse(System.Environment.GetEnvironmentVariable("OMP_NUM_THREADS"), NumberStyles.None, CultureInfo.InvariantCulture, out int omp) && omp > 0)
            return omp;
        return Math.Max(1, System.Environment.ProcessorCount / Math.Max(1, Environment.LocalWorldSize));
    }

    /// <summary>Element-wise maximum over ranks of <paramref name="values"/> (local values on one rank).</summary>
    public double[] Max(params double[] values) => Reduce(values, ReduceOp.Max);

    /// <summary>Element-wise sum over ranks of <paramref name="values"/>.</summary>
    public double[] Sum(params double[] values) => Reduce(values, ReduceOp.Sum);

    double[] Reduce(double[] values, ReduceOp op)
    {
        if (Comm is null || !IsDistributed) return values;
        using var scope = NewDisposeScope();
        var t = tensor(values, ScalarType.Float64).to(_device);
        Comm.AllReduce(t, op);
        return t.cpu().data<double>().ToArray();
    }

    /// <summary>True on every rank when it is true on any rank.</summary>
    public bool Any(bool local) => Max(local ? 1 : 0)[0] > 0;

    /// <summary>Rank 0's <paramref name="values"/> on every rank (int64, exact).</summary>
    public long[] Broadcast(params long[] values)
    {
        if (Comm is null || !IsDistributed) return values;
        using var scope = NewDisposeScope();
        var t = tensor(values, ScalarType.Int64).to(_device);
        Comm.Broadcast(t, root: 0);
        return t.cpu().data<long>().ToArray();
    }

    public void Barrier()
    {
        if (Comm is null || !IsDistributed) return;
        Comm.Barrier();
    }

    /// <summary>Element-wise sum over ranks of int64 <paramref name="values"/> (exact, unlike a double sum).</summary>
    public long[] SumExact(long[] values)
    {
        if (Comm is null || !IsDistributed) return values;
        using var scope = NewDisposeScope();
        var t = tensor(values, ScalarType.Int64).to(_device);
        Comm.AllReduce(t, ReduceOp.Sum);
        return t.cpu().data<long>().ToArray();
    }

    /// <summary>
    /// True on every rank when all ranks hold the same <paramref name="text"/>, false on every rank otherwise.
    /// Compares a 52-bit digest (exact in a double) by its maximum and minimum over ranks.
    /// </summary>
    public bool Agree(string text)
    {
        if (!IsDistributed) return true;
        double digest = BitConverter.ToUInt64(SHA256.HashData(Encoding.UTF8.GetBytes(text))) >> 12;
        var extremes = Max(digest, -digest);
        return extremes[0] == -extremes[1];
    }

    /// <summary>
    /// Fails on every rank when the ranks disagree on <paramref name="text"/> (e.g. the resolved recipe: a rank started
    /// with other overrides would silently train something else).
    /// </summary>
    public void RequireSame(string what, string text)
    {
        if (!Agree(text))
            throw new ConfigError($"the ranks do not agree on {what}: every rank must be started with the same command, recipe and overrides, and read the same input files");
    }

    /// <summary>Tells the other ranks that this one is failing, so their next collective fails at once with the reason.</summary>
    public void Abort(string reason)
    {
        if (Comm is null || !IsDistributed) return;
        try { Comm.Abort(reason); }
        catch (Exception e) when (e is CollectiveException or IOException or ObjectDisposedException) { }
    }

    public void Dispose()
    {
        if (_owned) Comm?.Dispose();
    }
}
