namespace MeLlama.Training.Planning;

/// <summary>How parameters, gradients and optimizer state are split across data-parallel ranks (torch FSDP's names).</summary>
public enum ShardingStrategy
{
    /// <summary>ZeRO-3: parameters, gradients and AdamW state sharded; each unit gathered just before it runs.</summary>
    FullShard,
    /// <summary>ZeRO-2: gradients and AdamW state sharded; full compute parameters stay resident during the step.</summary>
    ShardGradOp,
    /// <summary>Plain data parallel: everything replicated, gradients all-reduced.</summary>
    NoShard,
}

public static class ShardingStrategies
{
    public static string Name(ShardingStrategy s) => s switch
    {
        ShardingStrategy.FullShard => "full_shard",
        ShardingStrategy.ShardGradOp => "shard_grad_op",
        ShardingStrategy.NoShard => "no_shard",
        _ => throw new ArgumentOutOfRangeException(nameof(s)),
    };

    /// <summary>Parses full_shard | shard_grad_op | no_shard; <paramref name="field"/> names the option in the error.</summary>
    public static ShardingStrategy Parse(string text, string field) => text switch
    {
        "full_shard" => ShardingStrategy.FullShard,
        "shard_grad_op" => ShardingStrategy.ShardGradOp,
        "no_shard" => ShardingStrategy.NoShard,
        _ => throw new FormatException($"{field}: '{text}' is not a strategy (full_shard, shard_grad_op, no_shard)"),
    };
}
