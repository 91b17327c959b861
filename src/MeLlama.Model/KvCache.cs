using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>
/// Keys and values of the tokens seen so far, per layer, for incremental decoding: the prompt is run once
/// (prefill) and each further step feeds only the new tokens, which attend to everything cached.
/// Storage is allocated once for <see cref="Capacity"/> positions ([B, KvHeads, Capacity, HeadDim] per layer),
/// so a decode step writes in place instead of concatenating. Keys are cached after the rotary embedding,
/// so cached positions never need re-rotating.
/// </summary>
public sealed class KvCache : IDisposable
{
    readonly Tensor[] keys, values;

    public KvCache(LlamaConfig config, long batchSize, long capacity, Device device, ScalarType dtype)
    {
        if (batchSize <= 0 || capacity <= 0) throw new ArgumentException("KvCache needs a positive batch size and capacity");
        BatchSize = batchSize;
        Capacity = capacity;
        keys = new Tensor[config.NumLayers];
        values = new Tensor[config.NumLayers];
        for (int layer = 0; layer < config.NumLayers; layer++)
        {
            // The cache outlives whatever dispose scope the caller is in; Dispose() frees it.
            keys[layer] = zeros([batchSize, config.NumKvHeads, capacity, config.HeadDim], dtype, device).DetachFromDisposeScope();
            values[layer] = zeros([batchSize, config.NumKvHeads, capacity, config.HeadDim], dtype, device).DetachFromDisposeScope();
        }
    }

    /// <summary>A cache for <paramref name="model"/>'s shape, device and dtype.</summary>
    public static KvCache For(LlamaForCausalLM model, long batchSize, long? capacity = null) =>
        new(model.Config, batchSize, capacity ?? model.Config.MaxPositionEmbeddings, model.Device, model.Dtype);

    public long BatchSize { get; }
    public long Capacity { get; }

    /// <summary>Positions already cached; the next tokens take positions Length, Length+1, ….</summary>
    public long Length { get; private set; }

    /// <summary>
    /// Writes the new tokens' keys/values k, v [B, KvHeads, T, HeadDim] of <paramref name="layer"/> at
    /// positions Length … Length+T−1 and returns views of all cached keys/values [B, KvHeads, Length+T, HeadDim].
    /// <see cref="Length"/> moves on only with <see cref="Advance"/>, once every layer has appended.
    /// </summary>
    public (Tensor Keys, Tensor Values) Append(int layer, Tensor k, Tensor v)
    {
        long t = k.shape[2];
        if (k.shape[0] != BatchSize)
            throw new ArgumentException($"KvCache holds batch size {BatchSize}, got {k.shape[0]}");
        if (Length + t > Capacity)
            throw new InvalidOperationException($"KvCache is full: {Length} cached + {t} new > capacity {Capacity}");
        using (no_grad())
        {
            keys[layer].narrow(2, Length, t).copy_(k);
            values[layer].narrow(2, Length, t).copy_(v);
        }
        return (keys[layer].narrow(2, 0, Length + t), values[layer].narrow(2, 0, Length + t));
    }

    /// <summary>Marks <paramref name="tokens"/> more positions as cached (after all layers appended them).</summary>
    public void Advance(long tokens)
    {
        if (tokens < 0 || Length + tokens > Capacity) throw new ArgumentOutOfRangeException(nameof(tokens));
        Length += tokens;
    }

    /// <summary>Forgets everything cached (storage is reused).</summary>
    public void Reset() => Length = 0;

    public void Dispose()
    {
        foreach (var t in keys) t.Dispose();
        foreach (var t in values) t.Dispose();
    }
}
