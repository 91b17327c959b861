using MeLlama.Training.Config;
using MeLlama.Training.Loop;

namespace MeLlama.Training.Tests;

public sealed class ConfigTests
{
    [Fact]
    public void BuiltInRecipesLoadAndCarryTheMeLlamaHyperparameters()
    {
        Assert.Contains("demo", ConfigLoader.BuiltInNames);
        foreach (var name in new[] { "me-llama-7b", "me-llama-13b", "me-llama-70b" })
        {
            var c = ConfigLoader.Load(name);
            Assert.Equal(8e-6, c.Optimizer.Lr);
            Assert.Equal((0.9, 0.95), (c.Optimizer.Beta1, c.Optimizer.Beta2));
            Assert.Equal(1e-5, c.Optimizer.WeightDecay);
            Assert.Equal(0.05, c.Schedule.WarmupRatio);
            Assert.Equal("bf16", c.Precision);
            Assert.Equal([15.0, 1.0, 4.0], c.Data.Datasets.Select(d => d.Weight));
            Assert.Equal(4L << 20, c.GlobalBatchTokens);
            Assert.Equal(4L << 20, (long)Trainer.GradAccumSteps(c) * c.MicroBatch * c.SeqLen);
        }
        var demo = ConfigLoader.Load("demo");
        Assert.Null(demo.Model.InitFrom);
        Assert.NotNull(demo.Model.Arch);
    }

    [Fact]
    public void DottedOverridesReachNestedKeysListsAndAbsentSections()
    {
        var c = ConfigLoader.Load("me-llama-13b", ["optimizer.lr=1e-4", "data.datasets.1.weight=2.5", "seq_len=2048", "run_dir=/tmp/x",
            "model.arch.hidden_size=256", "data.eval_sets.0.name=pubmedqa", "data.eval_sets.0.path=/data/pqa", "precision=\"fp32\"", "activation_checkpointing=false"]);
        Assert.Equal(1e-4, c.Optimizer.Lr);
        Assert.Equal(2.5, c.Data.Datasets[1].Weight);
        Assert.Equal(2048, c.SeqLen);
        Assert.Equal("/tmp/x", c.RunDir);
        Assert.Equal(256, c.Model.Arch!.HiddenSize);
        Assert.Equal("pubmedqa", c.Data.EvalSets.Single().Name);
        Assert.Equal("fp32", c.Precision);
        Assert.False(c.ActivationCheckpointing);
    }

    [Theory]
    [InlineData("optimizer.lrr=1", "unknown key 'optimizer.lrr'")]
    [InlineData("optimiser.lr=1", "unknown key 'optimiser'")]
    [InlineData("seq_len.x=1", "'seq_len' is a value")]
    [InlineData("data.datasets.9.weight=1", "must be an index 0..3")]
    [InlineData("noequals", "expected key=value")]
    [InlineData("precision=fp8", "precision must be fp32 or bf16")]
    [InlineData("seq_len=abc", "$.seq_len")]
    [InlineData("checkpoint.keep_last=0", "checkpoint.keep_last must be >= 1")]
    public void BadOverridesAreRejectedWithAMessageNamingTheKey(string assignment, string expected)
    {
        var e = Assert.Throws<ConfigError>(() => ConfigLoader.Load("me-llama-7b", [assignment]));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void UnknownKeysInTheFileAreErrorsWithTheirPath()
    {
        var e = Assert.Throws<ConfigError>(() => ConfigLoader.Parse("""{ "optimizer": { "lr": 1e-5, "momentum": 0.9 } }""", "x.json"));
        Assert.Contains("x.json", e.Message);
        Assert.Contains("momentum", e.Message);
    }

    [Fact]
    public void GlobalBatchMustDivideAndAgreeWithGradAccum()
    {
        var c = ConfigLoader.Load("me-llama-7b");
        Assert.Throws<ConfigError>(() => Trainer.GradAccumSteps(c with { GlobalBatchTokens = 4096 * 4 * 3 + 1 }));
        Assert.Throws<ConfigError>(() => Trainer.GradAccumSteps(c with { GradAccum = 3 }));
        Assert.Equal(7, Trainer.GradAccumSteps(c with { GlobalBatchTokens = null, GradAccum = 7 }));
    }

    [Theory]
    [InlineData("3600", 3600)]
    [InlineData("45m", 2700)]
    [InlineData("3h50m", 13800)]
    [InlineData("23:50:00", 85800)]
    [InlineData("1-00:10:00", 87000)]
    [InlineData("10:30", 630)]
    public void TimeLimitsParseSlurmAndUnitStyles(string text, int seconds) =>
        Assert.Equal(TimeSpan.FromSeconds(seconds), TimeBudget.Parse(text));

    [Fact]
    public void TimeBudgetStopsWhenTheNextStepAndASaveMightNotFit()
    {
        var start = new DateTime(2025, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        var budget = new TimeBudget(TimeSpan.FromMinutes(60), start);
        Assert.False(budget.ShouldStop(start.AddMinutes(50), TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(2)));
        Assert.True(budget.ShouldStop(start.AddMinutes(55.5), TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(2)));
        Assert.Throws<FormatException>(() => TimeBudget.Parse("soon"));
    }
}
