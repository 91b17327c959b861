using System.Diagnostics;
using MeLlama.Training.Metrics;
using MeLlama.TestSupport;

namespace MeLlama.Training.Tests;

/// <summary>`mellama demo` end to end (shortened): prepare → pretrain → export → score → plot.</summary>
public sealed class DemoCommandTests
{
    [Fact]
    public async Task ShortDemoPreparesTrainsExportsScoresAndPlots()
    {
        using var tmp = new TempDir();
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = tmp.Path };
        foreach (var a in new[] { PreemptionTests.MellamaDll(), "demo", "--out", tmp["demo"], "--set", "max_steps=8", "--set", "eval.batches=1",
                     "--set", "checkpoint.interval=4" })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderrTask = p.StandardError.ReadToEndAsync();
        string stdout = await p.StandardOutput.ReadToEndAsync();
        string stderr = await stderrTask;
        await p.WaitForExitAsync();
        Assert.True(p.ExitCode == 0, $"exit {p.ExitCode}\n{stdout}\n{stderr}");
        Assert.Contains("held-out loss", stdout);
        string hf = tmp["demo/hf-model"];
        foreach (var f in new[] { "config.json", "generation_config.json", "model.safetensors", "mellama_export.json" })
            Assert.True(File.Exists(Path.Combine(hf, f)), $"{f} missing from the export");
        Assert.NotNull(Tokenization.TokenizerLoader.TryLoadFromModelFolder(hf));
        Assert.True(File.Exists(tmp["demo/run/plots/loss.png"]));
        var records = MetricsLog.Read(tmp["demo/run/metrics.jsonl"]).ToList();
        Assert.Equal(8, records.Count(r => r.Kind == "train"));
    }
}
