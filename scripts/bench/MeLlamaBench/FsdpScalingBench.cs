using System.Diagnostics;
using MeLlama.Distributed;
using MeLlama.Model;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;
using MeLlama.Training.Planning;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlamaBench;

/// <summary>
/// One rank of the FSDP scaling benchmark (scripts/bench/fsdp-scaling.sh starts 1 or N of them on localhost with
/// torchrun-style variables; with none set it is a 1-rank world). K steps of <see cref="FsdpTrainStep"/> on the bench
/// shape with a fixed global batch (--global-micro-batches, split evenly over the ranks: strong scaling), every
/// collective timed by <see cref="TimedCollectives"/>. Reports median step wall time, global tokens/s, the time
/// inside collectives per step and its share, and this process's CPU seconds per step.
/// </summary>
static class FsdpScalingBench
{
    public static Dictionary<string, object> Run(Args args)
    {
        var shape = BenchShape.FromArgs(args);
        int warmup = args.Int("warmup", 1), steps = args.Int("steps", 4), threads = args.Int("threads", 1);
        int globalMicroBatches = args.Int("global-micro-batches", 2);
        args.RejectUnknown();

        set_num_threads(threads);
        var env = Rendezvous.FromEnvironment();
        if (globalMicroBatches % env.WorldSize != 0)
            throw new ArgumentException($"--global-micro-batches {globalMicroBatches} must divide by the world size {env.WorldSize}");
        using var comm = new TimedCollectives(Collectives.Create(env, CollectivesOptions.FromEnvironment() with { Backend = env.WorldSize == 1 ? CollectiveBackend.Single : CollectiveBackend.Tcp }));
        int perRank = globalMicroBatches / env.WorldSize;
        Log(env.Rank, $"fsdp bench: {env.WorldSize} rank(s), {threads} thread(s) each, shape {shape.Name} ({shape.Config.ParameterCount() / 1e6:F1}M params), " +
                      $"global batch {globalMicroBatches}×{shape.Batch}×{shape.SeqLen}");

        using var scope = NewDisposeScope();
        using var model = new LlamaForCausalLM(shape.Config, seed: 1234);
        var options = new TrainStepOptions(Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, GradClip: 1.0, ActivationCheckpointing: true);
        // As `pretrain` builds it: full shard, gathered units freed after use, next unit prefetched.
        using var engine = new FsdpTrainStep(model, comm, options, ShardingStrategy.FullShard, freeAfterUse: true);
        var generator = new Generator(42);
        var times = new List<double>();
        var commTimes = new List<double>();
        var cpuTimes = new List<double>();
        var losses = new List<double>();
        long tokensPerStep = 0;
        for (int i = 0; i < warmup + steps; i++)
        {
            using var stepScope = NewDisposeScope();
            // Every rank draws the whole global batch from the same seed and takes its share, so the 1-rank and the
            // N-rank runs train on the same tokens.
            var global = Enumerable.Range(0, globalMicroBatches)
                .Select(_ => randint(0, shape.Config.VocabSize, [shape.Batch, shape.SeqLen + 1], dtype: ScalarType.Int64, generator: generator))
                .ToArray();
            var mine = global.Skip(env.Rank * perRank).Take(perRank).ToList();
            comm.Barrier(); // start the clock together, so a late rank's start-up is not counted as communication
            comm.Reset();
            double cpu0 = CpuClock.ProcessSeconds();
            var watch = Stopwatch.StartNew();
            var result = engine.Step(mine, lr: 3e-4);
            watch.Stop();
            tokensPerStep = result.Tokens;
            if (i < warmup) continue;
            times.Add(watch.Elapsed.TotalSeconds);
            commTimes.Add(comm.Total.TotalSeconds);
            cpuTimes.Add(CpuClock.ProcessSeconds() - cpu0);
            losses.Add(result.Loss);
            Log(env.Rank, $"step {i - warmup}: {watch.Elapsed.TotalSeconds:F2}s, collectives {comm.Total.TotalSeconds:F2}s, loss {result.Loss:F4}");
        }
        double median = Median(times), commMedian = Median(commTimes);
        return new Dictionary<string, object>
        {
            ["bench"] = "fsdp-scaling",
            ["rank"] = env.Rank,
            ["world_size"] = env.WorldSize,
            ["threads_per_rank"] = threads,
            ["shape"] = shape.Describe(),
            ["global_micro_batches"] = globalMicroBatches,
            ["global_tokens_per_step"] = tokensPerStep,
            ["steps"] = steps,
            ["step_seconds"] = times,
            ["step_seconds_median"] = median,
            ["tokens_per_second"] = tokensPerStep / median,
            ["collective_seconds"] = commTimes,
            ["collective_seconds_median"] = commMedian,
            ["collective_share"] = Median(times.Zip(commTimes, (t, c) => c / t).ToList()),
            ["collective_ops_last_step"] = comm.Totals.Select(t => new Dictionary<string, object>
            {
                ["op"] = t.Op, ["calls"] = t.Calls, ["seconds"] = t.Time.TotalSeconds, ["bytes"] = t.Bytes,
            }).ToList(),
            ["cpu_seconds_per_step_median"] = Median(cpuTimes),
            ["losses"] = losses,
            ["sharded_state_bytes"] = engine.ShardedStateBytes,
        };
    }

    static double Median(List<double> values)
    {
        if (values.Count == 0) return double.NaN;
        var sorted = values.Order().ToList();
        int m = sorted.Count / 2;
        return sorted.Count % 2 == 1 ? sorted[m] : (sorted[m - 1] + sorted[m]) / 2;
    }

    static void Log(int rank, string message) => Console.Error.WriteLine($"[rank {rank}] {message}");
}
