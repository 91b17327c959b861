namespace MeLlama.Distributed.Tcp;

/// <summary>How a ring operation's buffer is divided among the ranks.</summary>
interface IChunking
{
    long Count(int chunk);
    long Offset(int chunk);
}

/// <summary>
/// Splits n elements into WorldSize contiguous chunks whose sizes differ by at most one (the first
/// n mod W chunks get the extra element), so any size works, including fewer elements than ranks.
/// </summary>
readonly record struct RingChunks(long Numel, int WorldSize) : IChunking
{
    public long Count(int chunk) => Numel / WorldSize + (chunk < Numel % WorldSize ? 1 : 0);
    public long Offset(int chunk) => chunk * (Numel / WorldSize) + Math.Min(chunk, Numel % WorldSize);
}

/// <summary>Equal chunks of <see cref="PerRank"/> elements (reduce-scatter outputs, all-gather inputs).</summary>
readonly record struct RingChunksEqual(long PerRank) : IChunking
{
    public long Count(int chunk) => PerRank;
    public long Offset(int chunk) => chunk * PerRank;
}
