using System.Text.Json;
using MeLlama.Evaluation.Tasks;

namespace MeLlama.Evaluation.Reporting;

/// <summary>
/// The Me-LLaMA paper's published numbers (configs/eval/paper_results.json): per dataset and metric, one
/// value per model column (null = not found). Only numbers found and verified in the paper are in the file.
/// </summary>
public sealed class PaperResults
{
    public required string Source { get; init; }
    public required string Url { get; init; }
    public required string Setting { get; init; }
    public string? Verified { get; init; }
    public required IReadOnlyList<string> Models { get; init; }
    public required IReadOnlyDictionary<string, IReadOnlyList<string>> Sizes { get; init; }
    public required IReadOnlyDictionary<string, IReadOnlyDictionary<string, IReadOnlyList<double?>>> Results { get; init; }

    public static PaperResults LoadBuiltIn() => Parse(TaskCatalog.ReadBuiltInResource("paper_results.json"));

    public static PaperResults Parse(string json) =>
        JsonSerializer.Deserialize<PaperResults>(json, TaskCatalog.JsonOptions) ?? throw new InvalidDataException("empty paper_results.json");

    /// <summary>The paper's value for (dataset, paper metric, model), or null when the paper has none.</summary>
    public double? Get(string dataset, string metric, string model)
    {
        int column = Models.ToList().IndexOf(model);
        if (column < 0 || !Results.TryGetValue(dataset, out var metrics) || !metrics.TryGetValue(metric, out var values)) return null;
        return column < values.Count ? values[column] : null;
    }

    /// <summary>
    /// Columns for a model of <paramref name="parameterCount"/> parameters: the paper's 13B models for
    /// 6-30B, the 70B ones for 30-200B, otherwise all four Me-LLaMA models. An explicit size ("13B", "70B",
    /// "all") overrides.
    /// </summary>
    public IReadOnlyList<string> ColumnsFor(long? parameterCount, string? size = null)
    {
        string key = size ?? parameterCount switch
        {
            >= 6_000_000_000 and < 30_000_000_000 => "13B",
            >= 30_000_000_000 and < 200_000_000_000 => "70B",
            _ => "all",
        };
        var match = Sizes.Keys.FirstOrDefault(k => string.Equals(k, key, StringComparison.OrdinalIgnoreCase))
            ?? throw new ArgumentException($"Unknown paper size '{key}' (known: {string.Join(", ", Sizes.Keys)})");
        return Sizes[match];
    }
}
