using MeLlama.Model;
using MeLlama.Training.Config;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;

namespace MeLlama.Training.Loop;

/// <summary>Picks the step engine for a run: one process → <see cref="SingleProcessTrainStep"/>; several ranks → the FSDP engine.</summary>
public static class StepEngines
{
    /// <summary>
    /// The engine for <paramref name="world"/>. <paramref name="strategy"/> is the recipe's <c>parallel.strategy</c>
    /// (validated by <see cref="ConfigLoader"/>); it is the one place that maps recipe names to engine strategies.
    /// </summary>
    public static ITrainStep Create(LlamaForCausalLM model, TrainStepOptions options, TrainingWorld world, string strategy)
    {
        if (!world.IsDistributed) return new SingleProcessTrainStep(model, options);
        var comm = world.Comm!;
        try
        {
            return strategy switch
            {
                "full_shard" => new FsdpTrainStep(model, comm, options),
                "shard_grad_op" or "no_shard" => throw new ConfigError(
                    $"parallel.strategy={strategy} is not available in this build: its sharded engine supports full_shard only"),
                _ => throw new ConfigError($"parallel.strategy '{strategy}' is not one of {string.Join(", ", ParallelSection.Strategies)}"),
            };
        }
        catch (NotSupportedException e)
        {
            // The engine refuses model shapes it cannot shard (tied embeddings, non-fp32 parameters): a recipe problem.
            throw new ConfigError($"sharded training ({strategy}, {world.Size} ranks) cannot train this recipe: {e.Message}");
        }
    }
}
