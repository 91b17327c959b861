using System.Text.Json;
using System.Text.Json.Nodes;

namespace MeLlama.Inference.ChatTemplates;

/// <summary>The built-in templates by name, and custom ones from JSON (a config's "template" or a model folder's file).</summary>
public static class ChatTemplateRegistry
{
    public const string MeLlama = "mellama";
    public const string None = "none";

    /// <summary>
    /// Me-LLaMA's chat format: <c>Human: \n{prompt}\n\nAssistant: \n</c> followed by the answer and EOS; BOS once at
    /// the start; a system message goes first, followed by a blank line.
    /// </summary>
    public static FormatChatTemplate MeLlamaTemplate { get; } = new(MeLlama, "Human: \n{content}\n\nAssistant: \n", builtIn: true);

    /// <summary>No formatting: BOS, the prompt as is, then the completion and EOS (base models, prompt/completion data).</summary>
    public static FormatChatTemplate NoneTemplate { get; } = new(None, "{content}", builtIn: true);

    public static Llama2ChatTemplate Llama2Chat { get; } = new();

    static readonly Dictionary<string, IChatTemplate> ByName = new(StringComparer.OrdinalIgnoreCase)
    {
        [MeLlama] = MeLlamaTemplate, ["me-llama"] = MeLlamaTemplate, ["melllama"] = MeLlamaTemplate,
        [Llama2ChatTemplate.Name] = Llama2Chat, ["llama-2-chat"] = Llama2Chat, ["llama2"] = Llama2Chat,
        [None] = NoneTemplate, ["plain"] = NoneTemplate, ["raw"] = NoneTemplate,
    };

    /// <summary>Canonical names of the built-in templates.</summary>
    public static IReadOnlyList<string> BuiltInNames { get; } = [MeLlama, Llama2ChatTemplate.Name, None];

    public static bool TryGet(string name, out IChatTemplate template) => ByName.TryGetValue(name, out template!);

    /// <summary>A built-in template by name (aliases accepted); <see cref="ArgumentException"/> lists the names otherwise.</summary>
    public static IChatTemplate Get(string name) =>
        TryGet(name, out var template)
            ? template
            : throw new ArgumentException($"unknown chat template '{name}' (built-in: {string.Join(", ", BuiltInNames)}; a custom one is a JSON object with user_format/assistant_format)");

    /// <summary>
    /// A template from JSON: a string names a built-in one; an object is either {"id": BUILTIN} or a custom format
    /// template {"id"|"name", "user_format", "assistant_format"?, "system_format"?, "bos"?: once|per_turn|none,
    /// "eos_after_assistant"?: bool}. <paramref name="source"/> names where it came from in errors.
    /// </summary>
    public static IChatTemplate FromJson(JsonNode? node, string source)
    {
        if (node is null) throw new FormatException($"{source}: chat template is missing");
        if (node.GetValueKind() == JsonValueKind.String) return Named(node.GetValue<string>(), source);
        if (node is not JsonObject obj) throw new FormatException($"{source}: chat template must be a name or an object");
        string? id = Str(obj, "id", source) ?? Str(obj, "name", source);
        if (!obj.ContainsKey("user_format"))
            return id is null ? throw new FormatException($"{source}: chat template object needs \"id\" (a built-in name) or \"user_format\"") : Named(id, source);
        var known = new HashSet<string> { "id", "name", "kind", "user_format", "assistant_format", "system_format", "bos", "eos_after_assistant" };
        foreach (var (key, _) in obj)
            if (!known.Contains(key)) throw new FormatException($"{source}: unknown chat template field \"{key}\" (known: {string.Join(", ", known)})");
        try
        {
            return new FormatChatTemplate(
                id ?? "custom",
                Str(obj, "user_format", source)!,
                Str(obj, "assistant_format", source) ?? FormatChatTemplate.ContentPlaceholder,
                Str(obj, "system_format", source) ?? FormatChatTemplate.SystemPlaceholder + "\n\n",
                FormatChatTemplate.ParseBos(Str(obj, "bos", source), source),
                obj["eos_after_assistant"] is { } eos ? eos.GetValueKind() switch
                {
                    JsonValueKind.True => true,
                    JsonValueKind.False => false,
                    _ => throw new FormatException($"{source}: eos_after_assistant must be true or false"),
                } : true);
        }
        catch (ArgumentException e)
        {
            throw new FormatException($"{source}: {e.Message}", e);
        }
    }

    static IChatTemplate Named(string name, string source) =>
        TryGet(name, out var template) ? template : throw new FormatException($"{source}: unknown chat template '{name}' (built-in: {string.Join(", ", BuiltInNames)})");

    static string? Str(JsonObject obj, string key, string source)
    {
        var node = obj[key];
        if (node is null || node.GetValueKind() == JsonValueKind.Null) return null;
        return node.GetValueKind() == JsonValueKind.String ? node.GetValue<string>() : throw new FormatException($"{source}: chat template field \"{key}\" must be a string");
    }
}
