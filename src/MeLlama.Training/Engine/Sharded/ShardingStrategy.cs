namespace MeLlama.Training.Engine.Sharded;

/// <summary>What the FSDP engine shards across ranks (torch FSDP's names in <see cref="ShardingStrategies"/>).</summary>
public enum ShardingStrategy
{
    /// <summary>ZeRO-3: parameters, gradients and optimizer state sharded; parameters gathered per unit when used.</summary>
    FullShard,
    /// <summary>ZeRO-2: gradients and optimizer state sharded; parameters gathered once per step and kept.</summary>
    ShardGradOp,
    /// <summary>Data parallel: every rank holds everything; gradients all-reduced.</summary>
    NoShard,
}

public static class ShardingStrategies
{
    /// <summary>Parses torch FSDP's names: <c>full_shard</c>, <c>shard_grad_op</c>, <c>no_shard</c> (case-insensitive; '-' for '_' accepted).</summary>
    public static ShardingStrategy Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return text.Trim().Replace('-', '_').ToLowerInvariant() switch
        {
            "full_shard" => ShardingStrategy.FullShard,
            "shard_grad_op" => ShardingStrategy.ShardGradOp,
            "no_shard" => ShardingStrategy.NoShard,
            _ => throw new FormatException($"unknown sharding strategy \"{text}\" (expected full_shard, shard_grad_op or no_shard)"),
        };
    }

    /// <summary>torch FSDP's name of <paramref name="strategy"/>.</summary>
    public static string ToName(this ShardingStrategy strategy) => strategy switch
    {
        ShardingStrategy.FullShard => "full_shard",
        ShardingStrategy.ShardGradOp => "shard_grad_op",
        ShardingStrategy.NoShard => "no_shard",
        _ => throw new ArgumentOutOfRangeException(nameof(strategy), strategy, null),
    };
}
