using MeLlama.Training.Metrics;

namespace MeLlama.Training.Plotting;

/// <summary>
/// Renders a run's <c>metrics.jsonl</c> to PNG: <c>loss.png</c> (training loss and each held-out domain's loss by
/// step) and <c>lr.png</c> (learning rate by step). When a step appears more than once (a resumed run), the last
/// line wins.
/// </summary>
public static class RunPlotter
{
    public static IReadOnlyList<string> Plot(string runDir, string? outDir = null, int width = 1000, int height = 600)
    {
        string metricsPath = Path.Combine(runDir, "metrics.jsonl");
        if (!File.Exists(metricsPath)) throw new FileNotFoundException($"{metricsPath} does not exist (is {runDir} a pretrain run folder?)", metricsPath);
        var records = MetricsLog.Read(metricsPath).ToList();
        var train = records.Where(r => r.Kind == "train").GroupBy(r => r.Step).Select(g => g.Last()).OrderBy(r => r.Step).ToList();
        var evals = records.Where(r => r is { Kind: "eval", Domain: not null }).GroupBy(r => r.Domain!)
            .ToDictionary(g => g.Key, g => g.GroupBy(r => r.Step).Select(s => s.Last()).OrderBy(r => r.Step).ToList());
        if (train.Count == 0 && evals.Count == 0) throw new InvalidDataException($"{metricsPath} has no metrics yet");
        outDir ??= Path.Combine(runDir, "plots");
        Directory.CreateDirectory(outDir);

        var loss = new ScottPlot.Plot();
        var finiteTrain = train.Where(r => r.Loss is { } l && double.IsFinite(l)).ToList();
        if (finiteTrain.Count > 0)
        {
            var s = loss.Add.ScatterLine(finiteTrain.Select(r => (double)r.Step).ToArray(), finiteTrain.Select(r => r.Loss!.Value).ToArray());
            s.LegendText = "train";
        }
        foreach (var (domain, points) in evals.OrderBy(e => e.Key, StringComparer.Ordinal))
        {
            var s = loss.Add.Scatter(points.Select(r => (double)r.Step).ToArray(), points.Select(r => r.Loss ?? double.NaN).ToArray());
            s.LegendText = $"eval: {domain}";
            s.LineWidth = 2;
            s.MarkerSize = 6;
        }
        loss.Title($"Loss — {Path.GetFileName(Path.GetFullPath(runDir).TrimEnd('/'))}");
        loss.XLabel("step");
        loss.YLabel("cross-entropy (nats/token)");
        loss.ShowLegend();
        string lossPng = Path.Combine(outDir, "loss.png");
        loss.SavePng(lossPng, width, height);

        var lr = new ScottPlot.Plot();
        var withLr = train.Where(r => r.Lr is not null).ToList();
        if (withLr.Count > 0) lr.Add.ScatterLine(withLr.Select(r => (double)r.Step).ToArray(), withLr.Select(r => r.Lr!.Value).ToArray());
        lr.Title("Learning rate");
        lr.XLabel("step");
        lr.YLabel("lr");
        string lrPng = Path.Combine(outDir, "lr.png");
        lr.SavePng(lrPng, width, height);
        return [lossPng, lrPng];
    }
}
