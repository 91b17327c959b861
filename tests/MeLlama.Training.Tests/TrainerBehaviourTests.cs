using System.Text.Json;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Config;
using MeLlama.Training.Engine;
using MeLlama.Training.Loop;
using MeLlama.Training.Metrics;
using MeLlama.TestSupport;

namespace MeLlama.Training.Tests;

public sealed class TrainerBehaviourTests
{
    [Fact]
    public void NonFiniteStepsAreSkippedAndKInARowStopTheRunWithTheLastGoodStateSaved()
    {
        using var tmp = new TempDir();
        var domains = TrainTestData.TwoDomains(tmp.Path);
        // An absurd lr without clipping blows the weights up on the first update; every later step is non-finite.
        var config = TrainTestData.TinyRecipe(tmp["run"], domains, 20) with
        {
            Optimizer = new OptimizerSection { Lr = 1e36, GradClip = 0, WeightDecay = 0 },
            Schedule = new ScheduleSection { WarmupRatio = 0 }, MaxBadSteps = 3,
        };
        var outcome = TrainerHarness.Train(config);
        Assert.Equal(TrainEnd.Diverged, outcome.End);
        Assert.Equal(1, outcome.ExitCode);
        Assert.Contains("non-finite", outcome.Message);
        var state = JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(outcome.Checkpoint!, CheckpointFiles.TrainerState)), TrainerStateJson.Default.TrainerState)!;
        Assert.Equal("diverged", state.Reason);
        Assert.Equal(3, state.SkippedSteps);
        Assert.Equal(3, state.ConsecutiveBadSteps);
        Assert.Equal(1, state.OptimizerSteps); // only the first (finite) step was applied
        Assert.Equal(4, outcome.Step);
    }

    [Fact]
    public void ActivationCheckpointingGivesTheSameLossesAndNearlyTheSameWeights()
    {
        using var tmp = new TempDir();
        var domains = TrainTestData.TwoDomains(tmp.Path);
        var plain = TrainTestData.TinyRecipe(tmp["plain"], domains, 4);
        var recompute = plain with { RunDir = tmp["recompute"], ActivationCheckpointing = true };
        var a = TrainerHarness.Train(plain);
        var b = TrainerHarness.Train(recompute);
        var la = TrainerHarness.TrainLosses(plain.RunDir);
        var lb = TrainerHarness.TrainLosses(recompute.RunDir);
        foreach (var (step, loss) in la) Assert.Equal(loss, lb[step], 5);
        using var wa = Model.SafeTensorsReader.Open(Path.Combine(a.Checkpoint!, CheckpointFiles.Model));
        using var wb = Model.SafeTensorsReader.Open(Path.Combine(b.Checkpoint!, CheckpointFiles.Model));
        foreach (var name in wa.Entries.Keys)
        {
            using var ta = wa.ReadTensor(name);
            using var tb = wb.ReadTensor(name);
            double diff = (ta - tb).abs().max().item<float>();
            Assert.True(diff < 1e-4, $"{name}: max |Δ| {diff}");
        }
    }

    [Fact]
    public void Bf16TrainingKeepsFp32MasterWeightsAndLearns()
    {
        using var tmp = new TempDir();
        var domains = TrainTestData.TwoDomains(tmp.Path);
        var config = TrainTestData.TinyRecipe(tmp["bf16"], domains, 12) with { Precision = "bf16" };
        var outcome = TrainerHarness.Train(config);
        Assert.Equal(TrainEnd.Completed, outcome.End);
        using var reader = Model.SafeTensorsReader.Open(Path.Combine(outcome.Checkpoint!, CheckpointFiles.Model));
        Assert.All(reader.Entries.Values, e => Assert.Equal(TorchSharp.torch.ScalarType.Float32, e.Dtype));
        // Updates smaller than bf16's resolution still accumulate in the fp32 master copy.
        using var w = reader.ReadTensor("model.layers.0.mlp.up_proj.weight");
        using var roundTrip = w.to(TorchSharp.torch.ScalarType.BFloat16).to(TorchSharp.torch.ScalarType.Float32);
        Assert.True((w - roundTrip).abs().max().item<float>() > 0, "master weights are not bf16-rounded");
        foreach (var (domain, first) in outcome.FirstEval) Assert.True(outcome.LastEval[domain] < first, $"{domain}: {first} → {outcome.LastEval[domain]}");
    }

    [Fact]
    public void HeldOutLossIsEvaluatedPerDomainAndMetricsAreWritten()
    {
        using var tmp = new TempDir();
        var domains = TrainTestData.TwoDomains(tmp.Path);
        var config = TrainTestData.TinyRecipe(tmp["run"], domains, 8) with { Tensorboard = true, MeasurePeak = true };
        var outcome = TrainerHarness.Train(config);
        var records = MetricsLog.Read(Path.Combine(config.RunDir, "metrics.jsonl")).ToList();
        Assert.Equal([0L, 4L, 8L], records.Where(r => r is { Kind: "eval", Domain: "alpha" }).Select(r => r.Step));
        Assert.Equal(2, records.Count(r => r is { Kind: "eval", Step: 0 }));
        Assert.All(records.Where(r => r.Kind == "train"), r => Assert.True(r.TokensPerSecond > 0 && r.Mfu > 0 && r.MemoryMb > 0 && r.Lr > 0));
        Assert.True(outcome.LastEval["alpha"] < outcome.FirstEval["alpha"]);
        Assert.NotEmpty(Directory.EnumerateFiles(Path.Combine(config.RunDir, "tensorboard"), "events.out.tfevents*", SearchOption.AllDirectories));
        var plots = Plotting.RunPlotter.Plot(config.RunDir);
        Assert.All(plots, p => Assert.True(new FileInfo(p).Length > 1000));
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(plots[0]).Take(4));
    }

    [Fact]
    public void TimeLimitSavesAndStopsWithTheRequeueCode()
    {
        using var tmp = new TempDir();
        var domains = TrainTestData.TwoDomains(tmp.Path);
        var config = TrainTestData.TinyRecipe(tmp["run"], domains, 100000);
        var outcome = TrainerHarness.Train(config, timeLimit: TimeSpan.FromSeconds(3));
        Assert.Equal(TrainEnd.TimeLimit, outcome.End);
        Assert.Equal(75, outcome.ExitCode);
        Assert.True(outcome.Step > 0 && outcome.Step < 100000);
        Assert.True(CheckpointStore.Check(outcome.Checkpoint!).Ok);
    }
}
