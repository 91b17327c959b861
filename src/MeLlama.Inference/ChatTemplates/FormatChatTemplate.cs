using System.Text;
using System.Text.Json.Nodes;

namespace MeLlama.Inference.ChatTemplates;

/// <summary>Where BOS goes in a <see cref="FormatChatTemplate"/>.</summary>
public enum BosPlacement { Once, PerTurn, None }

/// <summary>
/// A template described by format strings: the shape of Me-LLaMA's template, of plain prompt/completion, and of a
/// custom template from a config. A turn is rendered as
/// <c>[BOS] [system_format(system), first turn only] user_format(user) assistant_format(answer) [EOS]</c>, where
/// user_format holds everything up to where the answer starts (so it ends with the assistant cue, e.g. "Assistant: \n").
/// </summary>
public sealed class FormatChatTemplate : IChatTemplate
{
    public const string ContentPlaceholder = "{content}";
    public const string SystemPlaceholder = "{system}";

    public FormatChatTemplate(string id, string userFormat, string assistantFormat = ContentPlaceholder, string systemFormat = SystemPlaceholder + "\n\n",
        BosPlacement bos = BosPlacement.Once, bool eosAfterAssistant = true, bool builtIn = false)
    {
        if (string.IsNullOrWhiteSpace(id)) throw new ArgumentException("a chat template needs a name");
        RequireOnce(userFormat, ContentPlaceholder, "user_format");
        RequireOnce(assistantFormat, ContentPlaceholder, "assistant_format");
        RequireOnce(systemFormat, SystemPlaceholder, "system_format");
        Id = id;
        UserFormat = userFormat;
        AssistantFormat = assistantFormat;
        SystemFormat = systemFormat;
        Bos = bos;
        EosAfterAssistant = eosAfterAssistant;
        BuiltIn = builtIn;
    }

    public string Id { get; }
    public string UserFormat { get; }
    public string AssistantFormat { get; }
    public string SystemFormat { get; }
    public BosPlacement Bos { get; }
    public bool EosAfterAssistant { get; }
    /// <summary>A preset known by id (stored as just its id).</summary>
    public bool BuiltIn { get; }

    static void RequireOnce(string format, string placeholder, string field)
    {
        ArgumentNullException.ThrowIfNull(format, field);
        int first = format.IndexOf(placeholder, StringComparison.Ordinal);
        if (first < 0 || format.IndexOf(placeholder, first + 1, StringComparison.Ordinal) >= 0)
            throw new ArgumentException($"chat template {field} must contain {placeholder} exactly once (got \"{format}\")");
    }

    public IReadOnlyList<TemplateChunk> Render(IReadOnlyList<ChatMessage> messages)
    {
        var chunks = new List<TemplateChunk>();
        if (Bos == BosPlacement.Once) chunks.Add(TemplateChunk.Bos);
        int start = messages.Count > 0 && messages[0].Role == ChatRole.System ? 1 : 0;
        string systemText = start == 1 ? SystemFormat.Replace(SystemPlaceholder, messages[0].Content, StringComparison.Ordinal) : "";
        for (int i = start; i < messages.Count; i += 2)
        {
            if (Bos == BosPlacement.PerTurn) chunks.Add(TemplateChunk.Bos);
            string prompt = UserFormat.Replace(ContentPlaceholder, messages[i].Content, StringComparison.Ordinal);
            chunks.Add(TemplateChunk.Prompt(i == start ? systemText + prompt : prompt));
            if (i + 1 >= messages.Count) break;
            chunks.Add(TemplateChunk.Answer(AssistantFormat.Replace(ContentPlaceholder, messages[i + 1].Content, StringComparison.Ordinal)));
            if (EosAfterAssistant) chunks.Add(TemplateChunk.Eos(trainable: true));
        }
        return chunks;
    }

    public string ToJinja()
    {
        static (string Before, string After) Split(string format, string placeholder)
        {
            int at = format.IndexOf(placeholder, StringComparison.Ordinal);
            return (format[..at], format[(at + placeholder.Length)..]);
        }
        var (sysBefore, sysAfter) = Split(SystemFormat, SystemPlaceholder);
        var (userBefore, userAfter) = Split(UserFormat, ContentPlaceholder);
        var (asstBefore, asstAfter) = Split(AssistantFormat, ContentPlaceholder);
        var sb = new StringBuilder();
        if (Bos == BosPlacement.Once) sb.Append("{{ bos_token }}");
        sb.Append("{% for message in messages %}");
        sb.Append("{% if message['role'] == 'system' %}");
        if (Bos == BosPlacement.PerTurn) sb.Append("{{ bos_token }}");
        sb.Append($"{{{{ {JinjaText.Literal(sysBefore)} + message['content'] + {JinjaText.Literal(sysAfter)} }}}}");
        sb.Append("{% elif message['role'] == 'user' %}");
        if (Bos == BosPlacement.PerTurn) sb.Append("{% if loop.index0 == 0 or messages[loop.index0 - 1]['role'] != 'system' %}{{ bos_token }}{% endif %}");
        sb.Append($"{{{{ {JinjaText.Literal(userBefore)} + message['content'] + {JinjaText.Literal(userAfter)} }}}}");
        sb.Append("{% elif message['role'] == 'assistant' %}");
        sb.Append($"{{{{ {JinjaText.Literal(asstBefore)} + message['content'] + {JinjaText.Literal(asstAfter)}{(EosAfterAssistant ? " + eos_token" : "")} }}}}");
        sb.Append("{% endif %}{% endfor %}");
        return sb.ToString();
    }

    public JsonObject ToJson() => BuiltIn
        ? new JsonObject { ["id"] = Id }
        : new JsonObject
        {
            ["id"] = Id,
            ["kind"] = "format",
            ["system_format"] = SystemFormat,
            ["user_format"] = UserFormat,
            ["assistant_format"] = AssistantFormat,
            ["bos"] = BosName(Bos),
            ["eos_after_assistant"] = EosAfterAssistant,
        };

    public static string BosName(BosPlacement bos) => bos switch
    {
        BosPlacement.Once => "once",
        BosPlacement.PerTurn => "per_turn",
        _ => "none",
    };

    public static BosPlacement ParseBos(string? name, string source) => name switch
    {
        null or "once" => BosPlacement.Once,
        "per_turn" => BosPlacement.PerTurn,
        "none" => BosPlacement.None,
        _ => throw new FormatException($"{source}: bos must be once, per_turn or none (got \"{name}\")"),
    };
}
