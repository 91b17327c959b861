using System.Reflection;
using System.Text.Json;

namespace MeLlama.Evaluation.Tasks;

/// <summary>
/// Finds task definitions by name: a path to a JSON file, a NAME.json in an extra task folder, or one of
/// the definitions built into this assembly (configs/eval/*.json, embedded at build time so the CLI works
/// from any folder).
/// </summary>
public sealed class TaskCatalog(string? taskDirectory = null)
{
    const string ResourcePrefix = "MeLlama.Evaluation.Tasks.";

    public static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
    };

    /// <summary>Names of the built-in tasks (and those in the extra folder), sorted.</summary>
    public IReadOnlyList<string> Names
    {
        get
        {
            var names = BuiltInNames().ToHashSet(StringComparer.OrdinalIgnoreCase);
            if (taskDirectory != null && Directory.Exists(taskDirectory))
                foreach (var f in Directory.EnumerateFiles(taskDirectory, "*.json"))
                    if (!Path.GetFileName(f).StartsWith("paper_", StringComparison.Ordinal)) names.Add(Path.GetFileNameWithoutExtension(f));
            return names.OrderBy(n => n, StringComparer.Ordinal).ToList();
        }
    }

    public TaskDefinition Get(string nameOrPath)
    {
        if (nameOrPath.EndsWith(".json", StringComparison.OrdinalIgnoreCase) && File.Exists(nameOrPath))
            return Parse(File.ReadAllText(nameOrPath), nameOrPath);
        if (taskDirectory != null)
        {
            string candidate = Path.Combine(taskDirectory, nameOrPath + ".json");
            if (File.Exists(candidate)) return Parse(File.ReadAllText(candidate), candidate);
        }
        using var stream = typeof(TaskCatalog).Assembly.GetManifestResourceStream(ResourcePrefix + nameOrPath.ToLowerInvariant() + ".json")
            ?? throw new ArgumentException($"Unknown task '{nameOrPath}'. Known tasks: {string.Join(", ", Names)}");
        using var reader = new StreamReader(stream);
        return Parse(reader.ReadToEnd(), $"built-in {nameOrPath}.json");
    }

    public static TaskDefinition Parse(string json, string source)
    {
        TaskDefinition? task;
        try { task = JsonSerializer.Deserialize<TaskDefinition>(json, JsonOptions); }
        catch (JsonException e) { throw new ArgumentException($"{source}: invalid task definition ({e.Message})", e); }
        if (task == null) throw new ArgumentException($"{source}: empty task definition");
        if (task.AnswerKind is AnswerKind.Entities or AnswerKind.Relations && task.LinePattern == null)
            throw new ArgumentException($"{source}: {task.AnswerKind} tasks need linePattern");
        return task;
    }

    /// <summary>The paper's published numbers (configs/eval/paper_results.json), embedded like the tasks.</summary>
    public static string ReadBuiltInResource(string fileName)
    {
        using var stream = typeof(TaskCatalog).Assembly.GetManifestResourceStream(ResourcePrefix + fileName)
            ?? throw new InvalidOperationException($"Resource {fileName} is not embedded in {typeof(TaskCatalog).Assembly.GetName().Name}");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    static IEnumerable<string> BuiltInNames() =>
        typeof(TaskCatalog).Assembly.GetManifestResourceNames()
            .Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal) && n.EndsWith(".json", StringComparison.Ordinal)
                        && !n.StartsWith(ResourcePrefix + "paper_", StringComparison.Ordinal))
            .Select(n => n[ResourcePrefix.Length..^".json".Length]);

    internal static Assembly Assembly => typeof(TaskCatalog).Assembly;
}
