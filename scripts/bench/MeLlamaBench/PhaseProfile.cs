using System.Diagnostics;
using MeLlama.Model;
using MeLlama.Training.Engine;
using MeLlama.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlamaBench;

/// <summary>
/// The operations of <see cref="SingleProcessTrainStep.Step"/> (no activation checkpointing, one micro-batch) run
/// one phase at a time with a clock around each, on a second optimizer over the same model, so a profile shows
/// where a step's time goes. The sum is close to, not exactly, the step time (phases cannot overlap here).
/// </summary>
static class PhaseProfile
{
    public static Dictionary<string, object> Run(LlamaForCausalLM model, SingleProcessTrainStep _, Tensor[] batches, Device device, TrainStepOptions options, int steps)
    {
        using var optimizer = new MasterAdamW(model.named_parameters().Select(p => (p.name, p.parameter)), options.Beta1, options.Beta2, options.Eps, options.WeightDecay);
        var phases = new[] { "zero_grad", "forward", "loss", "backward", "accumulate", "grad_norm", "adamw" };
        var samples = phases.ToDictionary(p => p, _ => new List<double>());
        var cpuSamples = phases.ToDictionary(p => p, _ => new List<double>());
        for (int i = 0; i < steps + 1; i++)
        {
            var times = new Dictionary<string, double>();
            var cpuTimes = new Dictionary<string, double>();
            var sw = Stopwatch.StartNew();
            double cpu = CpuClock.ProcessSeconds();
            void Mark(string phase)
            {
                PeakFlops.Sync(device);
                times[phase] = sw.Elapsed.TotalSeconds;
                double now = CpuClock.ProcessSeconds();
                cpuTimes[phase] = now - cpu;
                cpu = now;
                sw.Restart();
            }

            optimizer.ZeroGrad();
            Mark("zero_grad");
            using (var scope = NewDisposeScope())
            {
                var ids = batches[i % batches.Length].to(device);
                long t = ids.shape[1] - 1;
                var inputs = ids.narrow(1, 0, t);
                var labels = ids.narrow(1, 1, t);
                sw.Restart();
                cpu = CpuClock.ProcessSeconds();
                var logits = model.forward(inputs);
                Mark("forward");
                var loss = nn.functional.cross_entropy(logits.to(ScalarType.Float32).reshape(-1, logits.shape[^1]), labels.reshape(-1));
                Mark("loss");
                loss.backward();
                Mark("backward");
            }
            optimizer.AccumulateMicroBatchGradients();
            Mark("accumulate");
            double norm = optimizer.GradNorm();
            Mark("grad_norm");
            optimizer.Step(3e-4, gradScale: norm > options.GradClip ? options.GradClip / (norm + 1e-6) : 1.0);
            Mark("adamw");
            TrainBench.Log("phases (wall / cpu ms): " + string.Join(", ", times.Select(kv => $"{kv.Key} {kv.Value * 1000:F0}/{cpuTimes[kv.Key] * 1000:F0}")));
            if (i == 0) continue; // warm-up for this optimizer's first step
            foreach (var (phase, seconds) in times) samples[phase].Add(seconds);
            foreach (var (phase, seconds) in cpuTimes) cpuSamples[phase].Add(seconds);
        }
        return new Dictionary<string, object>
        {
            ["wall_seconds"] = phases.ToDictionary(p => p, p => TrainBench.Median(samples[p])),
            ["cpu_seconds"] = phases.ToDictionary(p => p, p => TrainBench.Median(cpuSamples[p])),
        };
    }
}
