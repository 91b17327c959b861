using System.CommandLine;
using MeLlama.Model;
using MeLlama.TestSupport;
using static MeLlama.Cli.Tests.InProcessCli;

namespace MeLlama.Cli.Tests;

public class PlanCommandTests
{
    [Fact]
    public void Seventy_b_fits_on_160_gpus_exit_0_and_not_on_8_exit_1()
    {
        var (code, stdout, stderr) = Mellama("plan", "--config", "me-llama-70b", "--preset", "70b", "--gpus", "160", "--gpu-memory", "80GB");
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("fits: yes", stdout);
        Assert.Contains("| AdamW moments |", stdout);
        Assert.Contains("160 × 80GB", stdout);
        Assert.Contains("→ does not fit", stdout); // the reality check's 8-GPU line

        (code, stdout, stderr) = Mellama("plan", "--config", "me-llama-70b", "--preset", "70b", "--gpus", "8", "--gpu-memory", "80GB");
        Assert.True(code == 1, stderr + stdout);
        Assert.Contains("fits: NO", stdout);
    }

    [Fact]
    public void Reads_the_shape_from_init_from_config_json_when_it_is_on_disk()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir["llama13"]);
        File.WriteAllText(Path.Combine(dir["llama13"], "config.json"), LlamaConfig.Llama2_13B.ToHfJson("bfloat16"));
        var (code, stdout, stderr) = Mellama("plan", "--config", "me-llama-13b", "--set", $"model.init_from={dir["llama13"]}",
            "--gpus", "8", "--gpu-memory", "80GiB");
        Assert.True(code is 0 or 1, stderr);
        Assert.Contains("13.02B parameters", stdout);
        Assert.Contains("d=5120, 40 layers", stdout);
    }

    [Fact]
    public void Arch_recipes_and_overrides_change_the_answer()
    {
        var (code, stdout, stderr) = Mellama("plan", "--config", "bench-100m", "--gpus", "1", "--gpu-memory", "8GiB", "--precision", "fp32");
        Assert.True(code == 0, stderr + stdout);
        (code, stdout, stderr) = Mellama("plan", "--config", "bench-100m", "--gpus", "1", "--gpu-memory", "1GiB", "--margin", "1MiB");
        Assert.True(code == 1, stderr + stdout);
        (code, _, stderr) = Mellama("plan", "--config", "bench-100m", "--set", "micro_batch=64", "--gpus", "1", "--gpu-memory", "8GiB", "--activation-checkpointing", "false");
        Assert.True(code == 1, stderr);
    }

    [Theory]
    [InlineData("--gpus", "0", "--gpus")]
    [InlineData("--gpus", "two", "--gpus")]
    [InlineData("--gpu-memory", "80GX", "--gpu-memory")]
    [InlineData("--strategy", "zero3", "--strategy")]
    [InlineData("--precision", "fp16", "--precision")]
    [InlineData("--activation-checkpointing", "yes", "--activation-checkpointing")]
    [InlineData("--margin", "lots", "--margin")]
    public void Bad_input_exits_2_naming_the_option(string option, string value, string named)
    {
        var args = new List<string> { "plan", "--config", "me-llama-70b", "--preset", "70b", "--gpus", "160", "--gpu-memory", "80GB" };
        int at = args.IndexOf(option);
        if (at >= 0) args[at + 1] = value;
        else args.AddRange([option, value]);
        var (code, _, stderr) = Mellama([.. args]);
        Assert.Equal(2, code);
        Assert.Contains(named, stderr);
    }

    [Fact]
    public void A_cluster_path_without_a_shape_exits_2_and_says_what_to_give()
    {
        var (code, _, stderr) = Mellama("plan", "--config", "me-llama-13b", "--gpus", "8", "--gpu-memory", "80GB");
        Assert.Equal(2, code);
        Assert.Contains("model.init_from", stderr);
        Assert.Contains("--preset", stderr);
        (code, _, stderr) = Mellama("plan", "--gpus", "8", "--gpu-memory", "80GB");
        Assert.Equal(2, code);
        Assert.Contains("--config", stderr);
        (code, _, stderr) = Mellama("plan", "--config", "no-such-recipe.json", "--gpus", "8", "--gpu-memory", "80GB");
        Assert.Equal(2, code);
        Assert.Contains("no-such-recipe.json", stderr);
    }
}
