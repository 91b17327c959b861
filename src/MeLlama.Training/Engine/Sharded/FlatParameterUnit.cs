using MeLlama.Distributed;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Training.Engine.Sharded;

/// <summary>One parameter inside a unit's flat buffer: elements [Offset, Offset + Numel).</summary>
public sealed record FlatSegment(string Name, long[] Shape, long Offset, long Numel);

/// <summary>
/// One FSDP unit (the embedding, one decoder block, or final norm + head): its parameters viewed as one flat
/// buffer padded to a multiple of the world size (<see cref="Layout"/>). A sharded unit owns the fp32 master
/// slice, the fp32 gradient slice and the fp32 AdamW moments of rank r's slice only; a no-shard unit owns all of them.
/// The module's own parameter tensors are the compute buffers, in the compute dtype (<see cref="ComputeDtype"/>:
/// fp32, or bf16/fp16 for mixed precision): <see cref="Gather"/> fills them before the unit runs, all-gathering the
/// master slices cast to the compute dtype (in bf16, half the bytes of fp32). Gradients come out of backward in the
/// compute dtype, are widened into an fp32 flat buffer and reduce-scattered (summed) in fp32 into the fp32 slice, so
/// accumulation over micro-batches and ranks never rounds to bf16 (the Megatron main_grad scheme, sharded).
/// With freeAfterUse the parameters are instead pointed at views of the gathered flat buffer and, after
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
    readonly ScalarType _computeDtype;

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
    /// <summary>dtype of the module's parameters (what is gathered and computed with); masters and gradients stay fp32.</summary>
    public ScalarType ComputeDtype => _computeDtype;
    /// <summary>True while the module's parameters hold gathered (full-size) values.</summary>
    public bool IsGathered { get; private set; }

    /// <param name="parameters">The unit's parameters with their shapes (a placeholder parameter of a model built on
    /// the meta device has no storage yet, so the shape is passed separately).</param>
    /// <param name="device">Where the flat buffers live (the compute device; NCCL needs CUDA tensors).</param>
    /// <param name="masters">Where the master weights come from; null: from the parameters' current values.</param>
    public FlatParameterUnit(string name, IReadOnlyList<(string Name, Parameter Param, long[] Shape)> parameters, ICollectives comm,
        Device device, ShardingStrategy strategy = ShardingStrategy.FullShard, bool freeAfterUse = false, IMasterSource? masters = null)
    {
        if (freeAfterUse && strategy != ShardingStrategy.FullShard) throw new ArgumentException("freeAfterUse needs the full-shard strategy", nameof(freeAfterUse));
        Name = name;
        _comm = comm;
        _sharded = strategy != ShardingStrategy.NoShard;
        _freeAfterUse = freeAfterUse;
        _device = device;
        _computeDtype = parameters.Count > 0 ? parameters[0].Param.dtype : ScalarType.Float32;
        if (!is_floating_point(_computeDtype)) throw new NotSupportedException($"the sharded engine trains floating-point parameters; {parameters[0].Name} is {_computeDtype}");
        long offset = 0;
        foreach (var (n, p, shape) in parameters)
        {
            if (p.dtype != _computeDtype) throw new NotSupportedException($"unit {name} mixes parameter dtypes: {n} is {p.dtype}, {parameters[0].Name} {_computeDtype}");
            if (p.device_type == DeviceType.META) throw new ArgumentException($"{n} is still on the meta device: replace it with a real (placeholder) tensor first", nameof(parameters));
            long numel = shape.Aggregate(1L, (a, b) => a * b);
            _slots.Add(new Slot(new FlatSegment(n, shape, offset, numel), p, Decay: shape.Length >= 2));
            offset += numel;
        }
        Layout = ShardLayout.For(offset, comm.WorldSize);
        OwnedOffset = _sharded ? Layout.ShardOffset(comm.Rank) : 0;
        OwnedNumel = _sharded ? Layout.ShardNumel : Layout.Numel;
        using var _ = no_grad();
        Master = zeros(OwnedNumel, ScalarType.Float32, _device).DetachFromDisposeScope();
        Grad = zeros(OwnedNumel, ScalarType.Float32, _device).DetachFromDisposeScope();
        ExpAvg = zeros(OwnedNumel, ScalarType.Float32, _device).DetachFromDisposeScope();
        ExpAvgSq = zeros(OwnedNumel, ScalarType.Float32, _device).DetachFromDisposeScope();
        if (masters is not null) FillMaster(masters);
        else
            foreach (var (segment, a, b) in OwnedRanges())
            {
                if (a >= b) continue;
                // Only the owned part is read (and widened to fp32 when the parameters are bf16): no full flat buffer.
                using var scope = NewDisposeScope();
                var param = _slots.First(s => s.Segment == segment).Param;
                Master.narrow(0, a - OwnedOffset, b - a).copy_(param.detach().reshape(-1).narrow(0, a - segment.Offset, b - a));
            }
        IsGathered = true;
        if (_freeAfterUse) Release();
    }

    /// <summary>Each segment with the flat range [A, B) of it this rank owns (A ≥ B: none).</summary>
    IEnumerable<(FlatSegment Segment, long A, long B)> OwnedRanges() =>
        _slots.Select(s => (s.Segment, Math.Max(s.Segment.Offset, OwnedOffset), Math.Min(s.Segment.Offset + s.Segment.Numel, OwnedOffset + OwnedNumel)));

    /// <summary>
    /// Overwrites this rank's master weights from <paramref name="masters"/> (asked once per parameter, in order; see
    /// <see cref="IMasterSource"/>). Padding stays zero. The module's parameters are not touched: gather next.
    /// </summary>
    public void FillMaster(IMasterSource masters)
    {
        using var _ = no_grad();
        Master.zero_();
        foreach (var (segment, a, b) in OwnedRanges())
        {
            using var scope = NewDisposeScope();
            bool owned = a < b;
            masters.Fill(segment.Name, segment.Shape, owned ? a - segment.Offset : 0, Master.narrow(0, owned ? a - OwnedOffset : 0, owned ? b - a : 0));
        }
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
        var full = empty(Layout.PaddedNumel, _computeDtype, _device);
        _comm.AllGather(CompactMaster(), full);
        Install(full);
    }

    /// <summary>This rank's master slice in the compute dtype: what the all-gather sends (the master itself in fp32).</summary>
    Tensor CompactMaster() => _computeDtype == ScalarType.Float32 ? Master : Master.to(_computeDtype);

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
        var full = empty(Layout.PaddedNumel, _computeDtype, _device).DetachFromDisposeScope();
        // Cast now, on the compute thread: the master does not change before the step's end, which drains the queue.
        Tensor send;
        using (no_grad()) send = CompactMaster().DetachFromDisposeScope();
        var item = worker.Enqueue($"all_gather {Name}", () => _comm.AllGather(send, full),
            cleanup: () => { if (!ReferenceEquals(send, Master)) send.Dispose(); });
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
        var none = empty(0, _computeDtype, _device);
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
        var mine = empty(Layout.ShardNumel, ScalarType.Float32, _device);
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
            mine = empty(Layout.ShardNumel, ScalarType.Float32, _device).DetachFromDisposeScope();
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

    /// <summary>
    /// The parameters' gradients as one fp32 flat buffer (padded when sharded), widened from the compute dtype, so the
    /// reduction over ranks and the accumulation happen in fp32; the full-size gradients are dropped.
    /// </summary>
    Tensor TakeGradients()
    {
        // Not zeros(): every element is written below (a gradient, zero where a parameter got none, zero padding), and
        // a full-unit memset per unit per micro-batch would be one more pass over the largest buffer of the step.
        long n = _sharded ? Layout.PaddedNumel : Layout.Numel;
        var full = empty(n, ScalarType.Float32, _device);
        if (n > Layout.Numel) full.narrow(0, Layout.Numel, n - Layout.Numel).zero_();
        foreach (var s in _slots)
        {
            var part = full.narrow(0, s.Segment.Offset, s.Segment.Numel);
            if (s.Param.grad is { } g) part.copy_(g.reshape(-1));
            else part.zero_();
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

    /// <summary>Sum of squared gradient elements this rank owns: a 0-d fp64 tensor on the unit's device (no host sync).</summary>
    public Tensor GradSquares() => Grad.device_type == DeviceType.CPU
        ? Grad.to(ScalarType.Float64).square().sum()
        : Grad.norm().to(ScalarType.Float64).square(); // one read of the fp32 gradient, no float64 copy (GPU memory traffic)

    /// <summary>
    /// AdamW on what this rank owns, with the same operations as <see cref="Optim.MasterAdamW.Step"/> element by
    /// element; weight decay only on the parts that belong to matrices. Gradients are multiplied by
    /// <paramref name="gradScale"/> (clipping) first. With <paramref name="fused"/>, one multi-tensor kernel call per
    /// decay group over views of the owned segments; otherwise separate torch ops over the whole shard.
    /// </summary>
    public void AdamW(double lr, double beta1, double beta2, double eps, double weightDecay, long step, double gradScale, Optim.TorchFusedAdamW? fused)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        if (fused is not null)
        {
            FusedAdamW(fused, lr, beta1, beta2, eps, weightDecay, step, gradScale);
            return;
        }
        if (gradScale != 1.0) Grad.mul_(gradScale);
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

    void FusedAdamW(Optim.TorchFusedAdamW fused, double lr, double beta1, double beta2, double eps, double weightDecay, long step, double gradScale)
    {
        long lo = OwnedOffset, hi = lo + OwnedNumel;
        var groups = new[] { true, false }.ToDictionary(d => d, _ => (M: new List<Tensor>(), G: new List<Tensor>(), A: new List<Tensor>(), V: new List<Tensor>()));
        foreach (var s in _slots)
        {
            long a = Math.Max(lo, s.Segment.Offset), b = Math.Min(hi, s.Segment.Offset + s.Segment.Numel);
            if (a >= b) continue;
            var g = groups[s.Decay && weightDecay > 0];
            g.M.Add(Master.narrow(0, a - lo, b - a));
            g.G.Add(Grad.narrow(0, a - lo, b - a));
            g.A.Add(ExpAvg.narrow(0, a - lo, b - a));
            g.V.Add(ExpAvgSq.narrow(0, a - lo, b - a));
        }
        foreach (var (decay, g) in groups)
            fused.Step(g.M, g.G, g.A, g.V, lr, beta1, beta2, eps, decay ? weightDecay : 0, step, gradScale);
    }

    public void Dispose()
    {
        Master.Dispose();
        Grad.Dispose();
        ExpAvg.Dispose();
        ExpAvgSq.Dispose();
    }
}
