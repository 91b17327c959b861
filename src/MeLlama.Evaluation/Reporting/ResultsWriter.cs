using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using MeLlama.Core.IO;

namespace MeLlama.Evaluation.Reporting;

/// <summary>Writes results.json (machine-readable) and results.md (our numbers beside the paper's), atomically.</summary>
public static class ResultsWriter
{
    public const string JsonFile = "results.json";
    public const string MarkdownFile = "results.md";

    static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public static void Write(string outDir, EvalReport report, PaperResults paper, UnixFileMode? mode = null)
    {
        AtomicFile.WriteAllText(Path.Combine(outDir, JsonFile), JsonSerializer.Serialize(report, Json) + "\n", mode);
        AtomicFile.WriteAllText(Path.Combine(outDir, MarkdownFile), Markdown(report, paper), mode);
    }

    public static string Markdown(EvalReport report, PaperResults paper)
    {
        var ic = CultureInfo.InvariantCulture;
        var columns = report.PaperColumns;
        var sb = new StringBuilder();
        sb.AppendLine("# MeLlama evaluation");
        sb.AppendLine();
        sb.AppendLine(ic, $"- Model: `{report.Model.Path}` (fingerprint `{Short(report.Model.Fingerprint)}`{(report.Model.ParameterCount is long p ? $", {p:N0} parameters" : "")})");
        sb.AppendLine(ic, $"- Mode: {report.Mode}, {report.Shots}-shot, seed {report.Seed}{(report.Limit is int l ? $", first {l} items per task" : "")}");
        sb.AppendLine(ic, $"- Intervals: {report.ConfidenceLevel:P0} percentile bootstrap over items, {report.BootstrapResamples} resamples");
        sb.AppendLine(ic, $"- Paper columns: {paper.Setting}; source: [{paper.Source}]({paper.Url})");
        sb.AppendLine();
        sb.Append("| Task | Mode | n | Metric | Ours [95% CI] |");
        foreach (var c in columns) sb.Append(ic, $" Paper {c} |");
        sb.AppendLine();
        sb.Append("|---|---|---:|---|---:|");
        foreach (var _ in columns) sb.Append("---:|");
        sb.AppendLine();
        foreach (var task in report.Tasks)
        {
            var rows = task.Metrics.Select(m => (m.Name, Ours: Format(m), PaperMetric: task.PaperMetrics?.GetValueOrDefault(m.Name))).ToList();
            foreach (var (name, reason) in task.NotImplemented)
                rows.Add((name, "not implemented", task.PaperMetrics?.GetValueOrDefault(name) ?? (name == "bertscore" ? "bertscore" : null)));
            foreach (var (name, ours, paperMetric) in rows)
            {
                sb.Append(ic, $"| {task.Task} | {task.Mode} {task.Shots}-shot | {task.Items} | {name} | {ours} |");
                foreach (var c in columns)
                {
                    string cell = paperMetric == null ? "" : paper.Get(task.PaperKey ?? task.Task, paperMetric, c) is double v ? v.ToString("0.000", ic) : "not found";
                    sb.Append(ic, $" {cell} |");
                }
                sb.AppendLine();
            }
        }
        if (report.Perplexity.Count > 0)
        {
            sb.AppendLine();
            sb.AppendLine("| Domain (held-out) | Windows | Tokens | Mean NLL | Perplexity [95% CI] |");
            sb.AppendLine("|---|---:|---:|---:|---:|");
            foreach (var d in report.Perplexity)
                sb.AppendLine(ic, $"| {d.Domain} | {d.Windows} | {d.Tokens} | {d.MeanNll:0.0000} | {d.Perplexity:0.00}{(d.PerplexityLower is double lo && d.PerplexityUpper is double hi ? $" [{lo:0.00}, {hi:0.00}]" : "")} |");
        }
        sb.AppendLine();
        sb.AppendLine("Empty paper cells: the paper reports no such metric for that dataset (e.g. length-normalised accuracy is ours only). \"not found\": the paper's value could not be found and verified, so none is shown.");
        foreach (var task in report.Tasks)
        {
            if (task.Unparsed > 0) sb.AppendLine(ic, $"- {task.Task}: {task.Unparsed} of {task.Items} outputs named no valid answer (counted wrong).");
            foreach (var (name, reason) in task.NotImplemented) sb.AppendLine(ic, $"- {task.Task} {name}: {reason}.");
        }
        foreach (var note in report.Notes) sb.AppendLine(ic, $"- {note}");
        return sb.ToString();
    }

    static string Format(Harness.MetricValue m) =>
        m.Lower is double lo && m.Upper is double hi
            ? string.Create(CultureInfo.InvariantCulture, $"{m.Value:0.000} [{lo:0.000}, {hi:0.000}]")
            : m.Value.ToString("0.000", CultureInfo.InvariantCulture);

    static string Short(string fingerprint) => fingerprint.Length > 24 ? fingerprint[..24] + "…" : fingerprint;
}
