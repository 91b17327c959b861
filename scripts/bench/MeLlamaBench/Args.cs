using System.Globalization;

namespace MeLlamaBench;

/// <summary>"--name value" options after the subcommand; unknown names are an error so typos do not pass silently.</summary>
sealed class Args
{
    readonly Dictionary<string, string> values = new(StringComparer.Ordinal);
    readonly HashSet<string> used = new(StringComparer.Ordinal);

    public Args(IEnumerable<string> args)
    {
        string? pending = null;
        foreach (var a in args)
        {
            if (a.StartsWith("--", StringComparison.Ordinal))
            {
                if (pending != null) values[pending] = "true";
                pending = a[2..];
            }
            else if (pending != null) { values[pending] = a; pending = null; }
            else throw new ArgumentException($"unexpected argument '{a}'");
        }
        if (pending != null) values[pending] = "true";
    }

    public string? Get(string name) { used.Add(name); return values.GetValueOrDefault(name); }
    public string Get(string name, string fallback) => Get(name) ?? fallback;
    public int Int(string name, int fallback) => Get(name) is { } v ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
    public double Double(string name, double fallback) => Get(name) is { } v ? double.Parse(v, CultureInfo.InvariantCulture) : fallback;
    public bool Flag(string name) => Get(name) is { } v && v != "false";

    public void RejectUnknown()
    {
        var unknown = values.Keys.Where(k => !used.Contains(k)).ToList();
        if (unknown.Count > 0) throw new ArgumentException($"unknown option(s): {string.Join(", ", unknown.Select(u => "--" + u))}");
    }
}
