using System.Globalization;
using System.Text.RegularExpressions;

namespace MeLlama.Training.Loop;

/// <summary>
/// A wall-clock budget (<c>--time-limit</c>): the loop stops early enough to finish the step in flight and write a
/// checkpoint before the budget (e.g. the Slurm job's time limit) runs out.
/// </summary>
public sealed partial class TimeBudget(TimeSpan limit, DateTime startUtc)
{
    public TimeSpan Limit { get; } = limit;
    public DateTime StartUtc { get; } = startUtc;

    /// <summary>True when another step plus a save (each with 50% headroom, and a 30 s margin capped at 5% of the budget) might not fit.</summary>
    public bool ShouldStop(DateTime nowUtc, TimeSpan stepTime, TimeSpan saveTime)
    {
        var margin = TimeSpan.FromSeconds(Math.Min(30, Limit.TotalSeconds * 0.05));
        var needed = (stepTime + saveTime) * 1.5 + margin;
        return nowUtc - StartUtc + needed >= Limit;
    }

    [GeneratedRegex(@"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")]
    private static partial Regex UnitPattern();

    /// <summary>Parses "3600", "90s", "45m", "3h50m", "1d2h", "HH:MM:SS", "D-HH:MM:SS" (Slurm style).</summary>
    public static TimeSpan Parse(string text)
    {
        text = text.Trim();
        if (long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long seconds)) return Positive(TimeSpan.FromSeconds(seconds), text);
        var m = UnitPattern().Match(text);
        if (m.Success && text.Length > 0)
        {
            long Get(int g) => m.Groups[g].Success ? long.Parse(m.Groups[g].Value, CultureInfo.InvariantCulture) : 0;
            return Positive(new TimeSpan((int)Get(1), (int)Get(2), (int)Get(3), (int)Get(4)), text);
        }
        int days = 0;
        string rest = text;
        int dash = text.IndexOf('-');
        if (dash > 0 && int.TryParse(text[..dash], NumberStyles.None, CultureInfo.InvariantCulture, out days)) rest = text[(dash + 1)..];
        var parts = rest.Split(':');
        if (parts.Length is 2 or 3 && parts.All(p => int.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out _)))
        {
            var n = parts.Select(p => int.Parse(p, CultureInfo.InvariantCulture)).ToArray();
            var span = parts.Length == 3 ? new TimeSpan(days, n[0], n[1], n[2]) : new TimeSpan(days, 0, n[0], n[1]);
            return Positive(span, text);
        }
        throw new FormatException($"time limit '{text}' is not a duration (examples: 3600, 45m, 3h50m, 23:50:00, 1-23:50:00)");
    }

    static TimeSpan Positive(TimeSpan t, string text) =>
        t > TimeSpan.Zero ? t : throw new FormatException($"time limit '{text}' must be positive");
}
