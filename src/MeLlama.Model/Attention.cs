using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>
/// Causal self-attention with rotary positions and grouped-query attention: NumHeads query heads share
/// NumKvHeads key/value heads (equal for 7B/13B, 8 for 70B). Weights q/k/v/o_proj as in HF.
/// </summary>
public sealed class LlamaAttention : nn.Module<Tensor, RotaryTables, Tensor>
{
    readonly Linear q_proj, k_proj, v_proj, o_proj;
    readonly int numHeads, numKvHeads, headDim, layerIndex;

    public LlamaAttention(LlamaConfig config, int layerIndex, ParameterFactory factory) : base("self_attn")
    {
        numHeads = config.NumHeads;
        numKvHeads = config.NumKvHeads;
        headDim = config.HeadDim;
        this.layerIndex = layerIndex;
        q_proj = factory.Linear(config.HiddenSize, numHeads * headDim);
        k_proj = factory.Linear(config.HiddenSize, numKvHeads * headDim);
        v_proj = factory.Linear(config.HiddenSize, numKvHeads * headDim);
        o_proj = factory.Linear(numHeads * headDim, config.HiddenSize);
        RegisterComponents();
    }

    public Linear QProj => q_proj;
    public Linear KProj => k_proj;
    public Linear VProj => v_proj;
    public Linear OProj => o_proj;

    /// <summary>x [B, T, D] → [B, T, D], every position attending to itself and earlier ones.</summary>
    public override Tensor forward(Tensor x, RotaryTables rope) => Forward(x, rope, null);

    /// <summary>As <see cref="forward"/>, but the T new positions also attend to the cached ones, and are added to the cache.</summary>
    public Tensor Forward(Tensor x, RotaryTables rope, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        long batch = x.shape[0], t = x.shape[1];

        // Project and split into heads: [B, T, heads·d] → [B, heads, T, d]. Projections go through call(), not
        // forward(), so forward hooks on them run: that is how LoRA adapters (MeLlama.Training.Finetune) attach.
        var q = q_proj.call(x).view(batch, t, numHeads, headDim).transpose(1, 2);
        var k = k_proj.call(x).view(batch, t, numKvHeads, headDim).transpose(1, 2);
        var v = v_proj.call(x).view(batch, t, numKvHeads, headDim).transpose(1, 2);

        // Rotate queries and keys by their absolute positions.
        q = rope.Apply(q);
        k = rope.Apply(k);

        long past = 0;
        if (cache != null)
        {
            past = cache.Length;
            (k, v) = cache.Append(layerIndex, k, v);
        }

        // Grouped-query attention: each key/value head serves NumHeads/NumKvHeads consecutive query heads.
        k = RepeatKv(k);
        v = RepeatKv(v);

        // Left-padded batches (generation of prompts of different lengths) carry their own mask in the cache.
        var paddingMask = cache?.AttentionMask(past, t, x.device);
        var attended = paddingMask is not null
            ? nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: paddingMask)
            : past == 0
            ? nn.functional.scaled_dot_product_attention(q, k, v, is_casual: t > 1)
            : nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: t > 1 ? CausalMaskAfter(past, t, x.device) : null);

        // Merge heads back: [B, heads, T, d] → [B, T, heads·d].
        var merged = attended.transpose(1, 2).reshape(batch, t, numHeads * headDim);
        return o_proj.call(merged).MoveToOuterDisposeScope();
    }

    Tensor RepeatKv(Tensor kv)
    {
        int groups = numHeads / numKvHeads;
        if (groups == 1) return kv;
        long batch = kv.shape[0], length = kv.shape[2];
        return kv.unsqueeze(2).expand(batch, numKvHeads, groups, length, headDim).reshape(batch, numHeads, length, headDim);
    }

    /// <summary>
    /// Mask for T new queries at positions past…past+T−1 over past+T keys: query i sees keys 0…past+i.
    /// (SDPA's is_causal aligns the triangle to the top-left corner, which is only right when past = 0.)
    /// </summary>
    static Tensor CausalMaskAfter(long past, long t, Device device) =>
        ones([t, past + t], ScalarType.Bool, device).tril(past);
}
