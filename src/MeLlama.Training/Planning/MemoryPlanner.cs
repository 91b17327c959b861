using MeLlama.Training.Engine.Sharded;
using MeLlama.Distributed;
using MeLlama.Model;

namespace MeLlama.Training.Planning;

/// <summary>What to plan for: a model shape, a per-GPU batch and a cluster.</summary>
public sealed record MemoryPlanRequest
{
    public required LlamaConfig Model { get; init; }
    public required int Gpus { get; init; }
    public required long GpuMemoryBytes { get; init; }
    public ShardingStrategy Strategy { get; init; } = ShardingStrategy.FullShard;
    /// <summary>"fp32" or "bf16" (bf16 compute, fp32 masters, gradients and moments).</summary>
    public string Precision { get; init; } = "bf16";
    public bool ActivationCheckpointing { get; init; } = true;
    public int MicroBatch { get; init; } = 1;
    public int SeqLen { get; init; } = 4096;
    /// <summary>CUDA context, NCCL buffers and allocator fragmentation.</summary>
    public long MarginBytes { get; init; } = 2L << 30;
    /// <summary>
    /// Count full-size compute parameters as resident all the time: <see cref="Engine.Sharded.FsdpTrainStep"/> built
    /// with <c>freeAfterUse: false</c> (the trainer frees gathered units under full_shard).
    /// </summary>
    public bool ResidentComputeParameters { get; init; }

    public int ElementBytes => Precision == "bf16" ? 2 : 4;

    /// <summary>Throws <see cref="ArgumentException"/> naming the field when the request makes no sense.</summary>
    public MemoryPlanRequest Validate()
    {
        if (Gpus < 1) throw new ArgumentException($"gpus must be at least 1 (got {Gpus})");
        if (GpuMemoryBytes <= 0) throw new ArgumentException($"gpu-memory must be positive (got {GpuMemoryBytes})");
        if (Precision is not ("fp32" or "bf16")) throw new ArgumentException($"precision must be fp32 or bf16 (got '{Precision}')");
        if (MicroBatch < 1) throw new ArgumentException($"micro_batch must be at least 1 (got {MicroBatch})");
        if (SeqLen < 1) throw new ArgumentException($"seq_len must be at least 1 (got {SeqLen})");
        if (MarginBytes < 0) throw new ArgumentException($"margin must not be negative (got {MarginBytes})");
        Model.Validate();
        return this;
    }
}

/// <summary>One row of the per-GPU table.</summary>
public sealed record MemoryLine(string Name, long Bytes, string Detail);

/// <summary>Per-GPU memory of a training step and whether it fits.</summary>
public sealed record MemoryPlan(MemoryPlanRequest Request, IReadOnlyList<MemoryLine> Lines)
{
    public long TotalBytes => Lines.Sum(l => l.Bytes);
    public bool Fits => TotalBytes <= Request.GpuMemoryBytes;
    /// <summary>GPU memory left over (negative: the shortfall).</summary>
    public long HeadroomBytes => Request.GpuMemoryBytes - TotalBytes;
    public long this[string name] => Lines.Single(l => l.Name == name).Bytes;
}

/// <summary>
/// Per-GPU memory of one training step of the FSDP-style engine (units: embedding, each decoder layer, final norm +
/// head; flat fp32 buffers padded to a multiple of the world size, as <see cref="Engine.Sharded.FlatParameterUnit"/>).
/// Rows:
/// <list type="bullet">
/// <item>parameters — compute-dtype weights alive at once. full_shard: the largest unit ×2 (the running unit and the
/// prefetched next one); with tied embeddings the embedding unit stays gathered for the whole micro-batch (its weight
/// is also the output head), so: embedding + the largest other unit ×2. shard_grad_op and no_shard: the whole model. In fp32 without sharding the master weights are
/// the parameters, so this row is then 0 and the master row holds them.</item>
/// <item>fp32 master — full_shard/shard_grad_op: Σ over units of the padded shard (⌈numel/N⌉ elements) × 4 bytes;
/// no_shard: the full model × 4.</item>
/// <item>gradients — sharded: the fp32 gradient slice plus, while one unit's backward runs, its full gradients in the
/// compute dtype and the padded fp32 flat buffer they are reduce-scattered from; tied embeddings add the embedding's
/// full gradient (compute dtype), held from the head's backward to the lookup's. no_shard: the fp32 accumulators
/// (model × 4) plus, in bf16, the model's bf16 gradients (model × 2).</item>
/// <item>AdamW moments — exp_avg and exp_avg_sq, fp32, 2 × slice (sharded) or 2 × model.</item>
/// <item>activations — <see cref="ActivationModel.Bytes"/> at micro_batch × seq_len.</item>
/// <item>logits — <see cref="ActivationModel.LogitsBytes"/>.</item>
/// <item>margin — CUDA context, communication buffers, fragmentation.</item>
/// </list>
/// </summary>
public static class MemoryPlanner
{
    /// <summary>Parameter counts of the FSDP units in engine order: embedding, layer 0…L−1, final norm + head.</summary>
    public static long[] UnitParameterCounts(LlamaConfig c)
    {
        long d = c.HiddenSize, q = (long)c.NumHeads * c.HeadDim, kv = (long)c.NumKvHeads * c.HeadDim;
        long layer = d * q + 2 * d * kv + q * d + 3 * d * c.IntermediateSize + 2 * d;
        long embedding = (long)c.VocabSize * d;
        long head = d + (c.TieWordEmbeddings ? 0 : (long)c.VocabSize * d);
        var units = new long[c.NumLayers + 2];
        units[0] = embedding;
        for (int i = 0; i < c.NumLayers; i++) units[i + 1] = layer;
        units[^1] = head;
        return units;
    }

    /// <summary>Elements of this rank's padded shards, summed over units (every rank holds the same count).</summary>
    public static long ShardElements(LlamaConfig c, int worldSize) =>
        UnitParameterCounts(c).Sum(n => ShardLayout.For(n, worldSize).ShardNumel);

    public static MemoryPlan Plan(MemoryPlanRequest r)
    {
        r.Validate();
        var c = r.Model;
        int e = r.ElementBytes;
        bool fp32 = e == 4;
        var units = UnitParameterCounts(c);
        long total = units.Sum();
        long largest = units.Max();
        long largestPadded = units.Select(n => ShardLayout.For(n, r.Gpus).PaddedNumel).Max();
        long slice = ShardElements(c, r.Gpus);
        // Tied: the embedding unit is also the head; the engine keeps it gathered (full shard) and its gradient alive
        // across the micro-batch's backward. Transient per-unit buffers are then the largest of the other units'.
        bool tied = c.TieWordEmbeddings;
        long embedding = units[0], embeddingPadded = ShardLayout.For(embedding, r.Gpus).PaddedNumel;
        long largestOther = units.Skip(1).Max(), largestOtherPadded = units.Skip(1).Max(n => ShardLayout.For(n, r.Gpus).PaddedNumel);
        long shardedGradients = tied
            ? slice * 4 + embedding * e + Math.Max(largestOther * e + largestOtherPadded * 4, embeddingPadded * 4)
            : slice * 4 + largest * e + largestPadded * 4;
        string gradientsDetail = tied
            ? $"fp32 slice + the tied embedding's full grads ({e} B, head to lookup) + one other unit's full grads and fp32 reduce-scatter buffer"
            : $"fp32 slice + one unit's full grads ({e} B) and its fp32 reduce-scatter buffer";
        long tokens = (long)r.MicroBatch * r.SeqLen;
        int largestIndex = Array.IndexOf(units, largest);
        string unitName = largestIndex == 0 ? "embedding" : largestIndex == units.Length - 1 ? "head" : "decoder layer";
        var lines = new List<MemoryLine>();

        switch (r.Strategy)
        {
            case ShardingStrategy.FullShard:
                lines.Add(r.ResidentComputeParameters
                    ? new MemoryLine("parameters", total * e, $"full model resident ({Count(total)} × {e} B): gathered units are not freed")
                    : tied
                        ? new MemoryLine("parameters", (embedding + 2 * largestOther) * e,
                            $"tied embedding ({Count(embedding)}) gathered for the whole micro-batch + largest other unit ({Count(largestOther)}) ×2 for prefetch, {e} B each")
                        : new MemoryLine("parameters", 2 * largest * e, $"gathered units alive at once: largest unit ({unitName}, {Count(largest)}) ×2 for prefetch, {e} B each"));
                lines.Add(new MemoryLine("fp32 master", slice * 4, $"1/{r.Gpus} slice: {Count(slice)} elements incl. padding × 4 B"));
                lines.Add(new MemoryLine("gradients", shardedGradients, gradientsDetail));
                lines.Add(new MemoryLine("AdamW moments", 2 * slice * 4, "exp_avg + exp_avg_sq of the slice, fp32"));
                break;
            case ShardingStrategy.ShardGradOp:
                lines.Add(new MemoryLine("parameters", total * e, $"full model in compute dtype ({Count(total)} × {e} B) for the whole step"));
                lines.Add(new MemoryLine("fp32 master", slice * 4, $"1/{r.Gpus} slice: {Count(slice)} elements incl. padding × 4 B"));
                lines.Add(new MemoryLine("gradients", shardedGradients, gradientsDetail));
                lines.Add(new MemoryLine("AdamW moments", 2 * slice * 4, "exp_avg + exp_avg_sq of the slice, fp32"));
                break;
            case ShardingStrategy.NoShard:
                lines.Add(new MemoryLine("parameters", fp32 ? 0 : total * e, fp32 ? "fp32: the master weights are the parameters" : $"bf16 copy of the model ({Count(total)} × 2 B)"));
                lines.Add(new MemoryLine("fp32 master", total * 4, $"full model, {Count(total)} × 4 B"));
                lines.Add(new MemoryLine("gradients", total * 4 + (fp32 ? 0 : total * e),
                    fp32 ? "full fp32 gradients (all-reduced)" : "fp32 accumulators + the bf16 gradients of the last backward"));
                lines.Add(new MemoryLine("AdamW moments", 2 * total * 4, "exp_avg + exp_avg_sq, full model, fp32"));
                break;
        }
        lines.Add(new MemoryLine("activations", ActivationModel.Bytes(c, tokens, e, r.ActivationCheckpointing),
            r.ActivationCheckpointing
                ? $"{r.MicroBatch}×{r.SeqLen} tokens, checkpointing: {c.NumLayers} layer inputs + one layer recomputed"
                : $"{r.MicroBatch}×{r.SeqLen} tokens, all {c.NumLayers} layers kept"));
        lines.Add(new MemoryLine("logits", ActivationModel.LogitsBytes(c, tokens, e), $"{r.MicroBatch}×{r.SeqLen}×{c.VocabSize}: logits, fp32 log-probs and gradient"));
        lines.Add(new MemoryLine("margin", r.MarginBytes, "CUDA context, communication buffers, fragmentation"));
        return new MemoryPlan(r, lines);
    }

    static string Count(long n) => n switch
    {
        >= 1_000_000_000 => $"{n / 1e9:F2}B",
        >= 1_000_000 => $"{n / 1e6:F1}M",
        _ => n.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}
