namespace MeLlama.Distributed.Store;

/// <summary>
/// The small key-value store ranks use to find each other (ring addresses, the NCCL id). Values are bytes.
/// Implementations are thread-safe.
/// </summary>
public interface IKeyValueStore
{
    void Set(string key, ReadOnlySpan<byte> value);

    /// <summary>The value of <paramref name="key"/>, waiting until some rank sets it; <see cref="TimeoutException"/> after <paramref name="timeout"/>.</summary>
    byte[] Get(string key, TimeSpan timeout);

    /// <summary>Atomically adds <paramref name="delta"/> to a 64-bit counter (0 when absent) and returns the new value.</summary>
    long Add(string key, long delta);

    /// <summary>Sets <paramref name="key"/> only if absent; returns whether this call set it and the value now stored.</summary>
    (bool WasSet, byte[] Current) SetIfAbsent(string key, ReadOnlySpan<byte> value);
}
