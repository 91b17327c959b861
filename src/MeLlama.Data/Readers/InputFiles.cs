using System.Text.RegularExpressions;

namespace MeLlama.Data.Readers;

/// <summary>Expands a source's paths (files, folders, globs with *, ?, **) into a sorted, de-duplicated file list.</summary>
public static class InputFiles
{
    /// <summary>Returns the files and, separately, the patterns that matched nothing.</summary>
    public static (List<string> Files, List<string> Unmatched) Expand(IReadOnlyList<string> patterns, IReadOnlyList<string> exclude, string baseDirectory)
    {
        var files = new SortedSet<string>(StringComparer.Ordinal);
        var unmatched = new List<string>();
        var excludes = exclude.Select(e => ToRegex(e.Contains('/') ? Resolve(e, baseDirectory) : e, nameOnly: !e.Contains('/'))).ToList();
        foreach (var pattern in patterns)
        {
            int before = files.Count;
            foreach (var f in Match(Resolve(pattern, baseDirectory)))
                if (!excludes.Any(x => x.IsMatch(x.Options.HasFlag(RegexOptions.Singleline) ? Path.GetFileName(f) : f)))
                    files.Add(f);
            if (files.Count == before) unmatched.Add(pattern);
        }
        return ([.. files], unmatched);
    }

    static string Resolve(string pattern, string baseDirectory)
    {
        if (pattern.StartsWith("~/", StringComparison.Ordinal))
            pattern = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), pattern[2..]);
        return Path.IsPathRooted(pattern) ? pattern : Path.Combine(baseDirectory, pattern);
    }

    static IEnumerable<string> Match(string pattern)
    {
        int wild = pattern.IndexOfAny(['*', '?', '[']);
        if (wild < 0)
        {
            string full = Path.GetFullPath(pattern);
            if (File.Exists(full)) return [full];
            if (Directory.Exists(full)) return AllFiles(full);
            return [];
        }
        int slash = pattern.LastIndexOf('/', wild);
        string root = Path.GetFullPath(slash <= 0 ? (slash == 0 ? "/" : ".") : pattern[..slash]);
        if (!Directory.Exists(root)) return [];
        var regex = ToRegex(Path.GetFullPath(root) == "/" ? pattern : Path.Combine(root, pattern[(slash + 1)..]), nameOnly: false);
        return AllFiles(root).Where(f => regex.IsMatch(f));
    }

    static IEnumerable<string> AllFiles(string dir)
    {
        var options = new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = false, AttributesToSkip = FileAttributes.Hidden };
        return Directory.EnumerateFiles(dir, "*", options).Where(f => !Path.GetFileName(f).StartsWith('.')).Select(Path.GetFullPath);
    }

    /// <summary>Glob → regex: ** spans folders, * and ? stay within one path segment.</summary>
    static Regex ToRegex(string glob, bool nameOnly)
    {
        var sb = new System.Text.StringBuilder("^");
        for (int i = 0; i < glob.Length; i++)
        {
            char c = glob[i];
            if (c == '*' && i + 1 < glob.Length && glob[i + 1] == '*')
            {
                i++;
                if (i + 1 < glob.Length && glob[i + 1] == '/') { i++; sb.Append("(?:.*/)?"); }
                else sb.Append(".*");
            }
            else if (c == '*') sb.Append("[^/]*");
            else if (c == '?') sb.Append("[^/]");
            else sb.Append(Regex.Escape(c.ToString()));
        }
        sb.Append('$');
        // Singleline marks "match the file name only" for exclude patterns without a folder part.
        return new Regex(sb.ToString(), RegexOptions.CultureInvariant | (nameOnly ? RegexOptions.Singleline : RegexOptions.None));
    }
}
