using MeLlama.Model;
using MeLlama.TestSupport;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Config;
using MeLlama.Training.Engine.Sharded;
using MeLlama.Training.Export;
using Xunit.Abstractions;

namespace MeLlama.Training.Tests.Distributed;

/// <summary>
/// The built-in demo recipe ties its embeddings; `mellama launch --nproc 2 -- pretrain` on such a recipe (the sharded
/// engine, full_shard, meta-device start) trains like one process on the same global batch, saves a sharded checkpoint,
/// and that exports to an HF folder without <c>lm_head.weight</c>.
/// </summary>
public sealed class LaunchedTiedPretrainTests(ITestOutputHelper output)
{
    [Fact]
    public void TwoRanksTrainATiedRecipeLikeOneProcessAndExportIt()
    {
        const long steps = 8;
        var demo = ConfigLoader.Load("demo");
        Assert.True(demo.Model.Arch!.TieWordEmbeddings, "the demo recipe is expected to tie its embeddings");
        using var tmp = new TempDir();
        var config = LaunchedPretrainTests.Recipe(tmp["two"], TrainTestData.TwoDomains(tmp.Path), steps) with
        {
            Parallel = demo.Parallel, // the demo's strategy (full_shard)
            Eval = new EvalSection { Interval = 1000, Batches = 1 },
            Checkpoint = new CheckpointSection { Interval = 1000, KeepLast = 2, SaveFinal = true },
        };
        config.Model.Arch!.TieWordEmbeddings = true;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using (var run = new LaunchedRun(2, LaunchedRun.WriteRecipe(config, tmp["two.json"])))
        {
            int? exit = run.WaitForExit(TimeSpan.FromSeconds(180));
            Assert.True(exit == 0, $"launch exited {exit}:\n{run.Output}");
            Assert.Contains("full_shard over 2 ranks (tcp)", run.Output);
        }
        output.WriteLine($"launch --nproc 2, tied, {steps} steps: {clock.Elapsed.TotalSeconds:F1} s");
        var single = TrainerHarness.Train(config with { RunDir = tmp["one"] });
        Assert.Equal(steps, single.Step);
        var expected = TrainerHarness.TrainLosses(tmp["one"]);
        var actual = TrainerHarness.TrainLosses(config.RunDir);
        Assert.Equal(expected.Keys, actual.Keys);
        foreach (var (step, loss) in expected)
            Assert.True(Math.Abs(actual[step] - loss) <= 1e-5 * Math.Abs(loss), $"step {step}: 2 ranks {actual[step]}, 1 process {loss}");
        output.WriteLine("losses: " + string.Join(", ", actual.Values.Select(v => v.ToString("F5"))));

        string checkpoint = HfExporter.ResolveCheckpoint(config.RunDir, Serilog.Core.Logger.None);
        Assert.True(ShardedCheckpoint.IsSharded(checkpoint));
        string exported = HfExporter.Export(config.RunDir, tmp["hf"], TorchSharp.torch.ScalarType.Float32);
        using (var reader = SafeTensorsReader.Open(Path.Combine(exported, "model.safetensors")))
            Assert.DoesNotContain("lm_head.weight", reader.Entries.Keys);
        using var model = HfCheckpoint.LoadModel(exported);
        Assert.Null(model.LmHead);
    }
}
