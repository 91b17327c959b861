using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>
/// Keys and values of the tokens seen so far, per layer, for incremental decoding: the prompt is run once
/// (prefill) and each further step feeds only the new tokens, which attend to everything cached.
/// Storage is allocated once for <see cref="Capacity"/> positions ([B, KvHeads, Capacity, HeadDim] per layer),
/// so a decode step writes in place instead of concatenating. Keys are cached after the rotary embedding,
/// so cached positions never need re-rotating.
/// <para>Prompts of different lengths share one cache by left padding (<see cref="SetLeftPadding"/>): every row's
/// tokens then sit at positions shifted by its padding, which rotary attention does not notice (scores depend on
/// position differences only), and <see cref="AttentionMask"/> keeps real tokens from attending to padding.</para>
/// </summary>
public sealed class KvCache : IDisposable
{
    readonly Tensor[] keys, values;
    /// <summary>Padding slots per row (left padding), or null when no row is padded.</summary>
    int[]? _padding;
    (long Past, long T, Tensor Mask)? _mask;

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

    /// <summary>Forgets everything cached (storage is reused), padding included.</summary>
    public void Reset()
    {
        Length = 0;
        SetLeftPadding(null);
    }

    /// <summary>
    /// Declares that row b's first <paramref name="padding"/>[b] positions hold padding, not tokens (call before the
    /// prefill; null: no padding).
    /// </summary>
    public void SetLeftPadding(IReadOnlyList<int>? padding)
    {
        if (Length != 0) throw new InvalidOperationException("padding is set before anything is cached");
        if (padding is not null && padding.Count != BatchSize) throw new ArgumentException($"KvCache holds batch size {BatchSize}, got padding for {padding.Count} rows");
        if (padding is not null && padding.Any(p => p < 0 || p >= Capacity)) throw new ArgumentOutOfRangeException(nameof(padding));
        _padding = padding is null || padding.All(p => p == 0) ? null : padding.ToArray();
        DropMask();
    }

    /// <summary>
    /// With padding: which cached keys each of T new queries (positions past…past+T−1) may attend to, [B, 1, T, past+T]
    /// (true = attend): causal, never a padding key, except that a padding query sees itself (a row of nothing but
    /// masked keys would give NaN, which masked-out values would still carry into real rows). Null without padding.
    /// The tensor belongs to the cache (reused by every layer of one forward).
    /// </summary>
    public Tensor? AttentionMask(long past, long t, Device device)
    {
        if (_padding is null) return null;
        if (_mask is { } m && m.Past == past && m.T == t) return m.Mask;
        DropMask();
        using var scope = NewDisposeScope();
        long keysLength = past + t;
        var keyPositions = arange(keysLength, device: device);
        var queryPositions = arange(past, keysLength, device: device);
        var causal = keyPositions.unsqueeze(0).le(queryPositions.unsqueeze(1));                         // [T, K]
        var padCounts = tensor(_padding.Select(p => (long)p).ToArray(), device: device);
        var realKey = keyPositions.unsqueeze(0).ge(padCounts.unsqueeze(1));                            // [B, K]
        var self = keyPositions.unsqueeze(0).eq(queryPositions.unsqueeze(1));                          // [T, K]
        var mask = causal.unsqueeze(0).logical_and(realKey.unsqueeze(1).logical_or(self.unsqueeze(0))).unsqueeze(1);
        _mask = (past, t, mask.DetachFromDisposeScope());
        return _mask.Value.Mask;
    }

    void DropMask()
    {
        _mask?.Mask.Dispose();
        _mask = null;
    }

    public void Dispose()
    {
        DropMask();
        foreach (var t in keys) t.Dispose();
        foreach (var t in values) t.Dispose();
    }
}
