using MeLlama.Distributed;
using MeLlama.Model;
using MeLlama.Training.Config;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;
using TorchSharp;

namespace MeLlama.Training.Loop;

/// <summary>
/// Picks the step engine for a run: one process → <see cref="SingleProcessTrainStep"/>; several ranks → the FSDP engine.
/// One process resuming a sharded checkpoint also gets the FSDP engine (over a one-rank communicator), because only it
/// reads and re-slices the per-rank shard files.
/// </summary>
public static class StepEngines
{
    /// <summary>
    /// True when <see cref="Create"/> will build the sharded engine: several ranks, or one process resuming a sharded
    /// checkpoint (<paramref name="resumeDir"/>). The trainer then builds the model on the meta device and lets the
    /// engine fill each rank's slices, so no rank ever holds the full model.
    /// </summary>
    public static bool UsesShardedEngine(TrainingWorld world, string? resumeDir) =>
        world.IsDistributed || (resumeDir != null && ShardedCheckpoint.IsSharded(resumeDir));

    /// <summary>
    /// The engine for <paramref name="world"/>. <paramref name="strategy"/> is the recipe's <c>parallel.strategy</c>
    /// (validated by <see cref="ConfigLoader"/>); it is the one place that maps recipe names to engine strategies.
    /// <paramref name="singleRankComm"/> is the communicator of a one-process run that must use the sharded engine
    /// (resuming a sharded checkpoint); null otherwise.
    /// </summary>
    /// <param name="masters">Sharded engine only: where its fp32 master slices come from (see <see cref="FsdpTrainStep"/>);
    /// with a model built on the meta device (<see cref="ModelFactory.Meta"/>) this is how the weights arrive.</param>
    /// <param name="device">Sharded engine with a meta-device model: the compute device.</param>
    /// <param name="labels">Sharded engine only: how rows become labels (null: pretraining rows); fine-tuning builds its
    /// one-process engine itself and calls <see cref="CreateSharded"/>.</param>
    public static ITrainStep Create(LlamaForCausalLM model, TrainStepOptions options, TrainingWorld world, string strategy, ICollectives? singleRankComm = null,
        IMasterSource? masters = null, torch.Device? device = null, IBatchLabels? labels = null)
    {
        if (!world.IsDistributed && singleRankComm is null) return new SingleProcessTrainStep(model, options);
        return CreateSharded(model, options, world.IsDistributed ? world.Comm! : singleRankComm!, strategy, masters, device, labels);
    }

    /// <summary>The FSDP engine over <paramref name="comm"/> with the recipe's <c>parallel.strategy</c>.</summary>
    public static FsdpTrainStep CreateSharded(LlamaForCausalLM model, TrainStepOptions options, ICollectives comm, string strategy,
        IMasterSource? masters = null, torch.Device? device = null, IBatchLabels? labels = null)
    {
        ShardingStrategy parsed;
        try { parsed = ShardingStrategies.Parse(strategy); }
        catch (FormatException) { throw new ConfigError($"parallel.strategy '{strategy}' is not one of {string.Join(", ", ParallelSection.Strategies)}"); }
        try
        {
            // ZeRO-3 frees each gathered unit after use: per-rank parameter memory is 1/N plus one unit.
            return new FsdpTrainStep(model, comm, options, parsed, freeAfterUse: parsed == ShardingStrategy.FullShard, masters: masters, device: device, labels: labels);
        }
        catch (NotSupportedException e)
        {
            // The engine refuses models it cannot shard (non-float parameters, parameters outside its units): a recipe problem.
            throw new ConfigError($"sharded training ({strategy}, {comm.WorldSize} rank(s)) cannot train this recipe: {e.Message}");
        }
    }
}
