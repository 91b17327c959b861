using MeLlama.Distributed;
using MeLlama.Model;
using MeLlama.Training.Config;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;

namespace MeLlama.Training.Loop;

/// <summary>
/// Picks the step engine for a run: one process → <see cref="SingleProcessTrainStep"/>; several ranks → the FSDP engine.
/// One process resuming a sharded checkpoint also gets the FSDP engine (over a one-rank communicator), because only it
/// reads and re-slices the per-rank shard files.
/// </summary>
public static class StepEngines
{
    /// <summary>
    /// The engine for <paramref name="world"/>. <paramref name="strategy"/> is the recipe's <c>parallel.strategy</c>
    /// (validated by <see cref="ConfigLoader"/>); it is the one place that maps recipe names to engine strategies.
    /// <paramref name="singleRankComm"/> is the communicator of a one-process run that must use the sharded engine
    /// (resuming a sharded checkpoint); null otherwise.
    /// </summary>
    public static ITrainStep Create(LlamaForCausalLM model, TrainStepOptions options, TrainingWorld world, string strategy, ICollectives? singleRankComm = null)
    {
        if (!world.IsDistributed && singleRankComm is null) return new SingleProcessTrainStep(model, options);
        var comm = world.IsDistributed ? world.Comm! : singleRankComm!;
        try
        {
            return strategy switch
            {
                // ZeRO-3 frees each gathered unit after use: per-rank parameter memory is 1/N plus one unit.
                "full_shard" => new FsdpTrainStep(model, comm, options, ShardingStrategy.FullShard, freeAfterUse: true),
                "shard_grad_op" => new FsdpTrainStep(model, comm, options, ShardingStrategy.ShardGradOp),
                "no_shard" => new FsdpTrainStep(model, comm, options, ShardingStrategy.NoShard),
                _ => throw new ConfigError($"parallel.strategy '{strategy}' is not one of {string.Join(", ", ParallelSection.Strategies)}"),
            };
        }
        catch (NotSupportedException e)
        {
            // The engine refuses model shapes it cannot shard (tied embeddings, non-fp32 parameters): a recipe problem.
            throw new ConfigError($"sharded training ({strategy}, {comm.WorldSize} rank(s)) cannot train this recipe: {e.Message}");
        }
    }
}
