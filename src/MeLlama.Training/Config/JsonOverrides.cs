using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MeLlama.Training.Config;

/// <summary>
/// The <c>--set dotted.key=value</c> override shared by every recipe loader. Keys walk objects by name and arrays by
/// index (<c>data.datasets.0.weight=2</c>; index = count appends). The value is read as JSON when it parses as JSON,
/// else as a string. Unknown keys are errors that name the key and list the known ones at that level.
/// </summary>
public static class JsonOverrides
{
    /// <summary>
    /// Applies one assignment to <paramref name="root"/>. <paramref name="template"/> (optional) is a fully populated
    /// config of the same shape: it supplies the keys of a section that is null in <paramref name="root"/> and the
    /// shape of an element appended to an array of sections.
    /// </summary>
    public static void Apply(JsonObject root, string assignment, JsonNode? template = null)
    {
        int eq = assignment.IndexOf('=');
        if (eq <= 0) throw new ConfigError($"--set '{assignment}': expected key=value");
        string key = assignment[..eq].Trim(), raw = assignment[(eq + 1)..];
        string[] parts = key.Split('.');
        JsonNode current = root;
        for (int i = 0; i < parts.Length; i++)
        {
            string part = parts[i];
            bool last = i == parts.Length - 1;
            string sofar = string.Join('.', parts[..(i + 1)]);
            switch (current)
            {
                case JsonObject obj:
                {
                    if (!obj.ContainsKey(part))
                        throw new ConfigError($"--set {key}: unknown key '{sofar}' (known: {string.Join(", ", obj.Select(p => p.Key))})");
                    template = template is JsonObject t && t.TryGetPropertyValue(part, out var tv) ? tv : null;
                    if (last) { obj[part] = ParseValue(raw); return; }
                    if (obj[part] is null)
                    {
                        if (template is JsonObject) obj[part] = template.DeepClone();
                        else throw new ConfigError($"--set {key}: '{sofar}' is empty; set it as a whole (e.g. --set {sofar}={{...}})");
                    }
                    current = obj[part]!;
                    break;
                }
                case JsonArray arr:
                {
                    if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int index) || index > arr.Count)
                        throw new ConfigError($"--set {key}: '{sofar}' must be an index 0..{arr.Count} (list has {arr.Count} entries)");
                    template = template is JsonArray ta && ta.Count > 0 ? ta[0] : null;
                    if (last)
                    {
                        if (index == arr.Count) arr.Add(ParseValue(raw));
                        else arr[index] = ParseValue(raw);
                        return;
                    }
                    if (index == arr.Count)
                    {
                        if (template is null) throw new ConfigError($"--set {key}: cannot append to '{string.Join('.', parts[..i])}'");
                        arr.Add(template.DeepClone());
                    }
                    current = arr[index] ?? throw new ConfigError($"--set {key}: '{sofar}' is empty; set it as a whole");
                    break;
                }
                default:
                    throw new ConfigError($"--set {key}: '{string.Join('.', parts[..i])}' is a value, not a section");
            }
        }
    }

    static JsonNode? ParseValue(string raw)
    {
        try { return JsonNode.Parse(raw); }
        catch (JsonException) { return JsonValue.Create(raw); }
    }
}
