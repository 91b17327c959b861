using MeLlama.Model;
using MeLlama.Training.Engine.Sharded;
using static TorchSharp.torch;

namespace MeLlama.Training.Loop;

/// <summary>
/// Where a sharded run's fp32 master weights come from when the trainer builds the model on the meta device:
/// the HF <c>init_from</c> checkpoint (each rank reads its byte ranges, converted to fp32) or the seeded random init
/// replayed parameter by parameter (bit-identical to <see cref="ModelFactory.RandomInit"/>); none when resuming
/// (the engine's <c>LoadState</c> fills them). Either way the masters are full precision, also in bf16 runs.
/// </summary>
public sealed class ShardedMasters : IDisposable
{
    readonly SafeTensorsCheckpoint? _checkpoint;

    ShardedMasters(IMasterSource? source, SafeTensorsCheckpoint? checkpoint)
    {
        Source = source;
        _checkpoint = checkpoint;
    }

    /// <summary>The source to hand the engine (null when resuming).</summary>
    public IMasterSource? Source { get; }

    public static ShardedMasters For(bool resuming, string? initFrom, LlamaConfig config, ulong seed, Device device)
    {
        if (resuming) return new ShardedMasters(null, null);
        if (initFrom != null)
        {
            var checkpoint = SafeTensorsCheckpoint.Open(initFrom);
            return new ShardedMasters(MasterSources.FromCheckpoint(checkpoint), checkpoint);
        }
        return new ShardedMasters(MasterSources.RandomInit(config, unchecked((long)seed), device), null);
    }

    public void Dispose() => _checkpoint?.Dispose();
}
