using MeLlama.Distributed;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Training.Engine.Sharded;

/// <summary>One parameter inside a unit's flat buffer: elements [Offset, Offset + Numel).</summary>
public sealed record FlatSegment(string Name, long[] Shape, long Offset, long Numel);

/// <summary>
/// One FSDP unit (the embedding, one decoder block, or final norm + head): its parameters viewed as one flat
/// fp32 buffer padded to a multiple of the world size (<see cref="Layout"/>). A sharded unit owns the fp32 master
/// slice, the gradient slice and the AdamW moments of rank r's slice only; a no-shard unit owns all of them.
/// The module's own parameter tensors are the compute buffers: <see cref="Gather"/> fills them before the unit runs.
/// With <c>freeAfterUse</c> the parameters are instead pointed at views of the gathered flat buffer and, after
/// <see cref="Release"/>, at an empty tensor, so between uses the unit holds no full-size parameter storage.
/// </summary>
public sealed class FlatParameterUnit : IDisposable
{
    readonly record struct Slot(FlatSegment Segment, Parameter Param, bool Decay);

    readonly List<Slot> _slots = [];
    readonly ICollectives _comm;
    readonly bool _sharded;
    readonly bool _freeAfterUse;
    readonly Device _device;

    public string Name { get; }
    /// <summary>How the unit's flat buffer splits over the world (also the layout of sharded checkpoints, whatever the strategy).</summary>
    public ShardLayout Layout { get; }
    /// <summary>First element (in the flat buffer) of what this rank owns: the shard offset, or 0 without sharding.</summary>
    public long OwnedOffset { get; }
    /// <summary>Elements this rank owns: the shard size (padding included), or the whole unpadded buffer without sharding.</summary>
    public long OwnedNumel { get; }
    /// <summary>fp32 master weights of what this rank owns [OwnedNumel] (padding elements stay zero).</summary>
    public Tensor Master { get; }
    /// <summary>Accumulated gradient of what this rank owns (summed over ranks once reduced).</summary>
    public Tensor Grad { get; }
    public Tensor ExpAvg { get; }
    public Tensor ExpAvgSq { get; }
    /// <summary>True while the module's parameters hold gathered (full-size) values.</summary>
    public bool IsGathered { get; private set; }

    public FlatParameterUnit(string name, IReadOnlyList<(string Name, Parameter Param)> parameters, ICollectives comm,
        ShardingStrategy strategy = ShardingStrategy.FullShard, bool freeAfterUse = false)
    {
        if (freeAfterUse && strategy != ShardingStrategy.FullShard) throw new ArgumentException("freeAfterUse needs the full-shard strategy", nameof(freeAfterUse));
        Name = name;
        _comm = comm;
        _sharded = strategy != ShardingStrategy.NoShard;
        _freeAfterUse = freeAfterUse;
        _device = parameters.Count > 0 ? parameters[0].Param.device : CPU; // flat buffers live with the parameters (NCCL needs CUDA tensors)
        long offset = 0;
        foreach (var (n, p) in parameters)
        {
            if (p.dtype != ScalarType.Float32) throw new NotSupportedException($"the sharded engine trains fp32 parameters only; {n} is {p.dtype}");
            _slots.Add(new Slot(new FlatSegment(n, p.shape, offset, p.numel()), p, Decay: p.dim() >= 2));
            offset += p.numel();
        }
        Layout = ShardLayout.For(offset, comm.WorldSize);
        OwnedOffset = _sharded ? Layout.ShardOffset(comm.Rank) : 0;
        OwnedNumel = _sharded ? Layout.ShardNumel : Layout.Numel;
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var flat = zeros(Layout.PaddedNumel, device: _device);
        foreach (var s in _slots) flat.narrow(0, s.Segment.Offset, s.Segment.Numel).copy_(s.Param.reshape(-1));
        Master = flat.narrow(0, OwnedOffset, OwnedNumel).clone().MoveToOuterDisposeScope();
        Grad = zeros(OwnedNumel, device: _device).MoveToOuterDisposeScope();
        ExpAvg = zeros(OwnedNumel, device: _device).MoveToOuterDisposeScope();
        ExpAvgSq = zeros(OwnedNumel, device: _device).MoveToOuterDisposeScope();
        IsGathered = true;
        if (_freeAfterUse) Release();
    }

    public IReadOnlyList<FlatSegment> Segments => _slots.Select(s => s.Segment).ToList();
    public IEnumerable<string> ParameterNames => _slots.Select(s => s.Segment.Name);

    /// <summary>Bytes of master weights, gradient and two moments this rank holds for the unit.</summary>
    public long OwnedStateBytes => 4 * OwnedNumel * sizeof(float);

    /// <summary>Bytes of storage the module's parameters currently point at, measured (0 for a released unit).</summary>
    public long ParameterStorageBytes => _freeAfterUse
        ? _slots.Select(s => ParameterStorage.StorageBytes(s.Param)).DefaultIfEmpty().Max() // views of one gathered buffer
        : _slots.Sum(s => ParameterStorage.StorageBytes(s.Param));

    /// <summary>Makes the module's parameters hold the current master weights (all-gathering the slices when sharded).</summary>
    public void Gather()
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        if (!_sharded)
        {
            foreach (var s in _slots) s.Param.copy_(Master.narrow(0, s.Segment.Offset, s.Segment.Numel).view(s.Segment.Shape));
            IsGathered = true;
            return;
        }
        var full = empty(Layout.PaddedNumel, device: _device);
        _comm.AllGather(Master, full);
        Install(full);
    }

    /// <summary>Parameters take the gathered values: views of <paramref name="full"/> (freeAfterUse) or copies.</summary>
    void Install(Tensor full)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        foreach (var s in _slots)
        {
            var view = full.narrow(0, s.Segment.Offset, s.Segment.Numel).view(s.Segment.Shape);
            // With freeAfterUse the parameter becomes a view of `full` (whose storage outlives `full` itself through it).
            if (_freeAfterUse) ParameterStorage.Set(s.Param, view);
            else s.Param.copy_(view);
        }
        IsGathered = true;
    }

    /// <summary>An all-gather queued on the communication worker, and the buffer it fills (see <see cref="StartGather"/>).</summary>
    internal sealed record PendingGather(FlatParameterUnit Unit, Tensor Full, CommWorker.Item Item);

    /// <summary>
    /// Prefetch, first half (full shard + freeAfterUse): queues this unit's all-gather on <paramref name="worker"/>
    /// and returns at once; <see cref="FinishGather"/> installs the result. The buffer is allocated here, on the
    /// compute thread, and detached from the caller's dispose scope because it must live until FinishGather, which
    /// runs after the unit before this one has computed (dispose scopes are per-thread and per-call).
    /// </summary>
    internal PendingGather StartGather(CommWorker worker)
    {
        if (!_sharded || !_freeAfterUse) throw new InvalidOperationException("prefetching gathers needs full shard with freeAfterUse");
        var full = empty(Layout.PaddedNumel, device: _device).DetachFromDisposeScope();
        var item = worker.Enqueue($"all_gather {Name}", () => _comm.AllGather(Master, full));
        return new PendingGather(this, full, item);
    }

    /// <summary>Prefetch, second half: waits for the queued all-gather (rethrowing its failure) and points the parameters at it.</summary>
    internal void FinishGather(PendingGather pending)
    {
        if (pending.Unit != this) throw new ArgumentException($"{pending.Unit.Name}'s gather finished as {Name}'s", nameof(pending));
        try
        {
            pending.Item.Wait();
            Install(pending.Full);
        }
        finally
        {
            // Wait returned or threw, so the worker is done with the buffer; the parameters keep its storage alive.
            pending.Full.Dispose();
        }
    }

    /// <summary>
    /// With freeAfterUse: points every parameter at an empty tensor, so the gathered storage is freed (as soon as
    /// autograd no longer holds it). Otherwise nothing: the parameters are persistent buffers.
    /// </summary>
    public void Release()
    {
        if (!_freeAfterUse || !IsGathered) return;
        using var scope = NewDisposeScope();
        var none = empty(0, device: _device);
        foreach (var s in _slots)
        {
            if (s.Param.grad is not null) s.Param.grad = null;
            ParameterStorage.Set(s.Param, none);
        }
        IsGathered = false;
    }

    /// <summary>
    /// Moves the parameters' gradients of the last backward into this rank's gradient (accumulating across
    /// micro-batches) and drops the full-size gradients. Sharded: reduce-scatter (sum) now. Not sharded: the
    /// local gradient is added, and <see cref="AllReduceGradients"/> sums over ranks once per step.
    /// </summary>
    public void ReduceGradients()
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var full = TakeGradients();
        if (!_sharded)
        {
            Grad.add_(full);
            return;
        }
        var mine = empty(Layout.ShardNumel, device: _device);
        _comm.ReduceScatter(full, mine, ReduceOp.Sum);
        Grad.add_(mine);
    }

    /// <summary>
    /// Sharded: <see cref="ReduceGradients"/> with the reduce-scatter (and the accumulation into <see cref="Grad"/>)
    /// queued on <paramref name="worker"/>, so it runs while the compute thread goes on to the next unit. Only the
    /// worker touches <see cref="Grad"/> until the step drains the queue. The flat gradient and the received slice
    /// are detached from dispose scopes and freed by the worker once the collective is over, successful or not.
    /// </summary>
    internal CommWorker.Item ReduceGradientsAsync(CommWorker worker)
    {
        if (!_sharded) throw new InvalidOperationException("only sharded units reduce-scatter");
        Tensor full, mine;
        using (no_grad())
        using (NewDisposeScope())
        {
            full = TakeGradients().DetachFromDisposeScope();
            mine = empty(Layout.ShardNumel, device: _device).DetachFromDisposeScope();
        }
        return worker.Enqueue($"reduce_scatter {Name}", () =>
        {
            _comm.ReduceScatter(full, mine, ReduceOp.Sum);
            using var _ = no_grad();
            Grad.add_(mine);
        }, cleanup: () =>
        {
            full.Dispose();
            mine.Dispose();
        });
    }

    /// <summary>The parameters' gradients as one flat buffer (padded when sharded); the full-size gradients are dropped.</summary>
    Tensor TakeGradients()
    {
        var full = zeros(_sharded ? Layout.PaddedNumel : Layout.Numel, device: _device);
        foreach (var s in _slots)
        {
            if (s.Param.grad is { } g) full.narrow(0, s.Segment.Offset, s.Segment.Numel).copy_(g.reshape(-1));
            if (s.Param.grad is not null) s.Param.grad = null;
        }
        return full;
    }

    /// <summary>No-shard only: sums the accumulated local gradients over ranks (one all-reduce per unit per step).</summary>
    public void AllReduceGradients()
    {
        if (_sharded) return;
        _comm.AllReduce(Grad, ReduceOp.Sum);
    }

    /// <summary>Sum of squared gradient elements this rank owns (fp64).</summary>
    public double LocalGradSquares()
    {
        using var scope = NewDisposeScope();
        return Grad.to(ScalarType.Float64).square().sum().item<double>();
    }

    /// <summary>
    /// AdamW on what this rank owns, with the same operations as <see cref="Optim.MasterAdamW.Step"/> element by
    /// element; weight decay only on the parts that belong to matrices.
    /// </summary>
    public void AdamW(double lr, double beta1, double beta2, double eps, double weightDecay, long step)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        double bc1 = 1 - Math.Pow(beta1, step), bc2 = 1 - Math.Pow(beta2, step);
        if (weightDecay > 0)
        {
            long lo = OwnedOffset, hi = lo + OwnedNumel;
            foreach (var s in _slots.Where(s => s.Decay))
            {
                long a = Math.Max(lo, s.Segment.Offset), b = Math.Min(hi, s.Segment.Offset + s.Segment.Numel);
                if (a < b) Master.narrow(0, a - lo, b - a).mul_(1 - lr * weightDecay);
            }
        }
        ExpAvg.mul_(beta1).add_(Grad, alpha: 1 - beta1);
        ExpAvgSq.mul_(beta2).addcmul_(Grad, Grad, value: 1 - beta2);
        var denom = ExpAvgSq.sqrt().div_(Math.Sqrt(bc2)).add_(eps);
        Master.addcdiv_(ExpAvg, denom, value: -lr / bc1);
    }

    public void Dispose()
    {
        Master.Dispose();
        Grad.Dispose();
        ExpAvg.Dispose();
        ExpAvgSq.Dispose();
    }
}
