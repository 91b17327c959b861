namespace MeLlama.Distributed;

/// <summary>
/// How a flat buffer of <see cref="Numel"/> elements is split into <see cref="WorldSize"/> equal shards
/// (FSDP style): the buffer is padded at the end to <see cref="PaddedNumel"/> = WorldSize × ShardNumel so
/// that reduce-scatter and all-gather move equal slices; rank r owns
/// <c>[ShardOffset(r), ShardOffset(r) + ShardNumel)</c>, of which <see cref="ValidNumel"/> are real elements.
/// </summary>
public readonly record struct ShardLayout(long Numel, int WorldSize, long ShardNumel)
{
    /// <param name="alignElements">Each shard's size is a multiple of this (e.g. 16 elements for 32/64-byte aligned slices).</param>
    public static ShardLayout For(long numel, int worldSize, int alignElements = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(numel);
        ArgumentOutOfRangeException.ThrowIfLessThan(worldSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(alignElements, 1);
        long perRank = (numel + worldSize - 1) / worldSize;
        long shard = (perRank + alignElements - 1) / alignElements * alignElements;
        return new ShardLayout(numel, worldSize, shard);
    }

    public long PaddedNumel => ShardNumel * WorldSize;
    public long Padding => PaddedNumel - Numel;
    public long ShardOffset(int rank) => CheckRank(rank) * ShardNumel;

    /// <summary>Real (non-padding) elements in rank <paramref name="rank"/>'s shard.</summary>
    public long ValidNumel(int rank) => Math.Clamp(Numel - ShardOffset(rank), 0, ShardNumel);

    long CheckRank(int rank) =>
        rank >= 0 && rank < WorldSize ? rank : throw new ArgumentOutOfRangeException(nameof(rank), $"rank {rank} is not in [0, {WorldSize})");
}
