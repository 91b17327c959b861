using System.Text.Json;
using MeLlama.Core.IO;

namespace MeLlama.Training.Metrics;

/// <summary>
/// <c>RUN/metrics.jsonl</c>: append-only, one JSON object per line, flushed per line so `tail -f` and `mellama plot`
/// see it live. On resume, lines past the resumed step (written by the interrupted process after its last
/// checkpoint) are dropped so curves have exactly one point per step.
/// </summary>
public sealed class MetricsLog : IDisposable
{
    readonly StreamWriter _writer;
    public string Path { get; }

    public MetricsLog(string path, long resumeStep)
    {
        Path = path;
        if (File.Exists(path)) TruncateAfter(path, resumeStep);
        _writer = new StreamWriter(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read)) { AutoFlush = true };
    }

    public void Write(MetricRecord record) => _writer.WriteLine(JsonSerializer.Serialize(record, MetricJson.Default.MetricRecord));

    public static IEnumerable<MetricRecord> Read(string path)
    {
        foreach (var line in File.ReadLines(path))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            MetricRecord? r;
            try { r = JsonSerializer.Deserialize(line, MetricJson.Default.MetricRecord); }
            catch (JsonException) { continue; } // a line torn by kill -9
            if (r != null) yield return r;
        }
    }

    static void TruncateAfter(string path, long step)
    {
        var kept = Read(path).Where(r => r.Step <= step).Select(r => JsonSerializer.Serialize(r, MetricJson.Default.MetricRecord));
        AtomicFile.WriteAllText(path, string.Concat(kept.Select(l => l + "\n")));
    }

    public void Dispose() => _writer.Dispose();
}
