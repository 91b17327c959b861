using System.Globalization;

namespace MeLlama.Distributed.Slurm;

/// <summary>
/// Expands Slurm's tasks-per-node notation (SLURM_TASKS_PER_NODE, SLURM_STEP_TASKS_PER_NODE, and
/// SLURM_NTASKS_PER_NODE when it carries a list): <c>4(x2),2</c> means 4 tasks on each of the first two
/// nodes and 2 on the third.
/// </summary>
public static class SlurmTasksPerNode
{
    public static IReadOnlyList<int> Expand(string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        var counts = new List<int>();
        foreach (var raw in value.Split(','))
        {
            var item = raw.Trim();
            int repeat = 1;
            int paren = item.IndexOf('(');
            if (paren >= 0)
            {
                if (!item.EndsWith(')') || item.Length < paren + 4 || item[paren + 1] != 'x'
                    || !int.TryParse(item.AsSpan(paren + 2, item.Length - paren - 3), NumberStyles.None, CultureInfo.InvariantCulture, out repeat) || repeat < 1)
                    throw new FormatException($"cannot parse Slurm tasks-per-node '{value}': '{item}' is not N or N(xK)");
                item = item[..paren];
            }
            if (!int.TryParse(item, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n < 1)
                throw new FormatException($"cannot parse Slurm tasks-per-node '{value}': '{item}' is not a positive count");
            if (counts.Count + (long)repeat > SlurmHostList.MaxHosts)
                throw new FormatException($"cannot parse Slurm tasks-per-node '{value}': too many nodes");
            for (int k = 0; k < repeat; k++) counts.Add(n);
        }
        return counts;
    }
}
