using System.Globalization;
using System.Text;

namespace MeLlama.Distributed.Slurm;

/// <summary>
/// Expands Slurm's compressed host lists (SLURM_JOB_NODELIST) such as <c>gpu[001-004,010],login1</c>,
/// <c>node[1-2,5],gpu-a[01-03]</c> or the multi-dimensional <c>rack[1-2]-n[01-02]</c>, in Slurm's order.
/// A range keeps the zero padding of its lower bound (<c>[08-10]</c> → 08, 09, 10), as Slurm does.
/// </summary>
public static class SlurmHostList
{
    /// <summary>Expansions beyond this many hosts are refused: they mean a malformed list, not a real job.</summary>
    public const int MaxHosts = 1_000_000;

    public static IReadOnlyList<string> Expand(string hostList)
    {
        ArgumentNullException.ThrowIfNull(hostList);
        var hosts = new List<string>();
        foreach (var item in SplitTopLevel(hostList))
        {
            if (item.Length == 0) throw Error(hostList, "empty host name (two commas in a row, or a trailing comma)");
            ExpandItem(hostList, item, hosts);
        }
        if (hosts.Count == 0) throw Error(hostList, "no hosts");
        return hosts;
    }

    /// <summary>The first host of a compressed list without expanding the rest (used for MASTER_ADDR).</summary>
    public static string First(string hostList) => Expand(hostList)[0];

    static List<string> SplitTopLevel(string list)
    {
        var items = new List<string>();
        int depth = 0, start = 0;
        for (int i = 0; i < list.Length; i++)
        {
            char c = list[i];
            if (c == '[') { if (++depth > 1) throw Error(list, $"nested '[' at position {i}"); }
            else if (c == ']') { if (--depth < 0) throw Error(list, $"unmatched ']' at position {i}"); }
            else if (c == ',' && depth == 0)
            {
                items.Add(list[start..i].Trim());
                start = i + 1;
            }
        }
        if (depth != 0) throw Error(list, "unclosed '['");
        items.Add(list[start..].Trim());
        return items;
    }

    /// <summary>One host pattern: literal text with any number of bracket groups; the expansion is their cartesian product.</summary>
    static void ExpandItem(string whole, string item, List<string> into)
    {
        var parts = new List<string[]>();
        int i = 0;
        while (i < item.Length)
        {
            int open = item.IndexOf('[', i);
            if (open < 0) { parts.Add([item[i..]]); break; }
            if (open > i) parts.Add([item[i..open]]);
            int close = item.IndexOf(']', open);
            parts.Add(ExpandRanges(whole, item[(open + 1)..close]));
            i = close + 1;
        }
        long total = 1;
        foreach (var p in parts) total *= p.Length;
        if (into.Count + total > MaxHosts) throw Error(whole, $"expands to more than {MaxHosts} hosts");
        var sb = new StringBuilder();
        Product(parts, 0, sb, into);
    }

    static void Product(List<string[]> parts, int index, StringBuilder prefix, List<string> into)
    {
        if (index == parts.Count) { into.Add(prefix.ToString()); return; }
        int mark = prefix.Length;
        foreach (var piece in parts[index])
        {
            prefix.Append(piece);
            Product(parts, index + 1, prefix, into);
            prefix.Length = mark;
        }
    }

    static string[] ExpandRanges(string whole, string ranges)
    {
        var result = new List<string>();
        foreach (var raw in ranges.Split(','))
        {
            var range = raw.Trim();
            if (range.Length == 0) throw Error(whole, "empty range inside '[...]'");
            int dash = range.IndexOf('-');
            string lo = dash < 0 ? range : range[..dash];
            string hi = dash < 0 ? range : range[(dash + 1)..];
            if (!IsDigits(lo) || !IsDigits(hi)) throw Error(whole, $"'{range}' is not a number or a range of numbers");
            long a = long.Parse(lo, CultureInfo.InvariantCulture), b = long.Parse(hi, CultureInfo.InvariantCulture);
            if (b < a) throw Error(whole, $"range '{range}' runs backwards");
            if (b - a + 1 + result.Count > MaxHosts) throw Error(whole, $"expands to more than {MaxHosts} hosts");
            int width = lo.Length;
            for (long v = a; v <= b; v++)
                result.Add(v.ToString(CultureInfo.InvariantCulture).PadLeft(width, '0'));
        }
        return result.ToArray();
    }

    static bool IsDigits(string s) => s.Length > 0 && s.All(char.IsAsciiDigit);

    static FormatException Error(string list, string what) => new($"cannot parse Slurm host list '{list}': {what}");
}
