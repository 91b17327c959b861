using System.Globalization;

namespace MeLlama.Training.Metrics;

/// <summary>
/// The live status line on an interactive terminal (stderr, rewritten in place). When stderr is not a terminal
/// (Slurm logs, pipes) nothing is drawn: the trainer logs plain lines instead.
/// </summary>
public sealed class ProgressLine(bool enabled)
{
    bool _drawn;
    public bool Enabled { get; } = enabled;

    public static ProgressLine ForConsole(bool quiet) => new(!quiet && !Console.IsErrorRedirected);

    public void Draw(long step, long totalSteps, double loss, double lr, double tokensPerSecond, TimeSpan? eta, double? mfu)
    {
        if (!Enabled) return;
        var inv = CultureInfo.InvariantCulture;
        string text = string.Create(inv, $"step {step}/{totalSteps}  loss {loss:F4}  lr {lr:E2}  {tokensPerSecond:F0} tok/s");
        if (mfu is { } m) text += string.Create(inv, $"  MFU {m * 100:F1}%");
        if (eta is { } e) text += "  ETA " + Format(e);
        Console.Error.Write("\r\u001b[K" + text);
        _drawn = true;
    }

    /// <summary>Ends the status line so that a log line can follow on its own line.</summary>
    public void Break()
    {
        if (!_drawn) return;
        Console.Error.WriteLine();
        _drawn = false;
    }

    public static string Format(TimeSpan t) =>
        t.TotalHours >= 1 ? $"{(int)t.TotalHours}h{t.Minutes:D2}m" : t.TotalMinutes >= 1 ? $"{t.Minutes}m{t.Seconds:D2}s" : $"{t.Seconds}s";
}
