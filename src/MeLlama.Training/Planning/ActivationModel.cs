using MeLlama.Model;

namespace MeLlama.Training.Planning;

/// <summary>
/// Bytes autograd keeps for backward, derived op by op from this repository's LLaMA modules (in the spirit of
/// Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models", §4, without tensor or
/// sequence parallelism and without dropout, which LLaMA does not use). n = micro_batch × seq_len tokens, d = hidden,
/// f = intermediate (SwiGLU), h = query heads, e = bytes of the compute dtype (4 fp32, 2 bf16).
/// <para>One decoder layer, input x [n, d]:
/// <list type="bullet">
/// <item>RMSNorm ×2: the input (x, resp. the residual h) and the normalised tensor (mul by the gain saves both), the
/// output (saved by the next matmuls): per norm 2·n·d·e beyond its input; in bf16 also the fp32 upcast x32 (n·d·4),
/// because the statistics are taken in fp32.</item>
/// <item>Attention: q, k, v as SDPA receives them, 3·n·d·e. Rotary embedding saves only its cos/sin tables (constants).
/// GQA saves nothing here: <c>RepeatKv</c> materialises k and v at the full head count, so k and v are n·d each.
/// SDPA (flash / memory-efficient kernel) keeps its output n·d·e and the log-sum-exp n·h·4 (fp32), no s² term.
/// The merged heads (transpose + reshape copies) feed o_proj: n·d·e. The residual sum h: n·d·e.</item>
/// <item>SwiGLU: gate output (saved by SiLU), SiLU output and up output (saved by the product), the product (saved
/// by down_proj): 4·n·f·e.</item>
/// </list>
/// Per layer: x + 2 norms×2 + qkv 3 + SDPA out 1 + merged 1 + h 1 = 11·n·d·e, plus 4·n·f·e, plus 4·n·h, plus
/// (bf16) 2·n·d·4. The layer output is the next layer's input and is counted there.</para>
/// <para>Head: the last layer's output and the final norm's normalised and output tensors, 3·n·d·e (logits are
/// counted separately by <see cref="LogitsBytes"/>).</para>
/// <para>With per-layer activation checkpointing (what <see cref="Engine.SingleProcessTrainStep"/> and
/// <see cref="Engine.Sharded.FsdpTrainStep"/> do): every layer's input n·d·e is kept, and one layer's full set is
/// alive while it is recomputed, plus its incoming and outgoing gradient (2·n·d·e).</para>
/// <para>Not modelled: the math-path SDPA, which would add the n·h·s attention-probability matrix (e bytes each);
/// CUDA/CPU allocator rounding (covered by the margin).</para>
/// </summary>
public static class ActivationModel
{
    /// <summary>All saved tensors of one decoder layer (its input included).</summary>
    public static long LayerBytes(LlamaConfig c, long tokens, int elementBytes)
    {
        long d = c.HiddenSize, f = c.IntermediateSize, h = c.NumHeads;
        long bytes = 11 * tokens * d * elementBytes + 4 * tokens * f * elementBytes + 4 * tokens * h;
        if (elementBytes != 4) bytes += 2 * tokens * d * 4; // RMSNorm's fp32 upcast of its input
        return bytes;
    }

    /// <summary>Input of one layer (what checkpointing keeps per layer).</summary>
    public static long LayerInputBytes(LlamaConfig c, long tokens, int elementBytes) => tokens * c.HiddenSize * elementBytes;

    /// <summary>Final norm: the last hidden state, the normalised tensor and the norm output.</summary>
    public static long HeadBytes(LlamaConfig c, long tokens, int elementBytes) => 3 * tokens * c.HiddenSize * elementBytes;

    /// <summary>Activations of one micro-batch at the point where the most are alive (end of forward / recompute).</summary>
    public static long Bytes(LlamaConfig c, long tokens, int elementBytes, bool checkpointing)
    {
        long head = HeadBytes(c, tokens, elementBytes);
        if (!checkpointing) return c.NumLayers * LayerBytes(c, tokens, elementBytes) + head;
        return c.NumLayers * LayerInputBytes(c, tokens, elementBytes) + LayerBytes(c, tokens, elementBytes)
               + 2 * LayerInputBytes(c, tokens, elementBytes) + head;
    }

    /// <summary>
    /// Output head and loss: the logits in the compute dtype, their fp32 copy when that is not fp32 (the loss is
    /// taken in fp32), cross-entropy's saved fp32 log-probabilities, and the fp32 gradient of the logits, each n·V.
    /// </summary>
    public static long LogitsBytes(LlamaConfig c, long tokens, int elementBytes)
    {
        long nv = tokens * c.VocabSize;
        return nv * elementBytes + (elementBytes != 4 ? nv * 4 : 0) + nv * 4 + nv * 4;
    }
}
