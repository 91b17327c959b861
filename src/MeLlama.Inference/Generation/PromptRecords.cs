using System.Text.Json;
using System.Text.Json.Nodes;
using MeLlama.Inference.ChatTemplates;

namespace MeLlama.Inference.Generation;

/// <summary>
/// What to generate for one JSON record of a batch file: "messages" [{role, content}] or "conversations"
/// [{from, value}] (a final assistant message is the reference answer and is left out), "instruction" (+ "input"),
/// or "prompt"; an optional top-level "system". Problems name the field, never the text.
/// </summary>
public static class PromptRecords
{
    public static IReadOnlyList<ChatMessage> ToMessages(JsonObject record)
    {
        var messages = new List<ChatMessage>();
        if (record["messages"] is JsonArray list) ReadTurns(list, "messages", "role", "content", messages);
        else if (record["conversations"] is JsonArray conv) ReadTurns(conv, "conversations", "from", "value", messages);
        else if (Str(record, "instruction") is { } instruction)
        {
            string input = Str(record, "input") ?? "";
            messages.Add(ChatMessage.User(input.Trim().Length > 0 ? instruction + "\n\n" + input : instruction));
        }
        else if (Str(record, "prompt") is { } prompt) messages.Add(ChatMessage.User(prompt));
        else throw new FormatException("record has no \"prompt\", \"instruction\", \"messages\" or \"conversations\" field");
        if (messages.Count > 0 && messages[^1].Role == ChatRole.Assistant) messages.RemoveAt(messages.Count - 1);
        if (Str(record, "system") is { } system && (messages.Count == 0 || messages[0].Role != ChatRole.System)) messages.Insert(0, ChatMessage.System(system));
        if (Conversation.Problem(messages, forGeneration: true) is { } problem) throw new FormatException(problem);
        return messages;
    }

    static void ReadTurns(JsonArray turns, string field, string roleField, string textField, List<ChatMessage> messages)
    {
        for (int i = 0; i < turns.Count; i++)
        {
            if (turns[i] is not JsonObject turn) throw new FormatException($"{field}[{i}] is not an object");
            string role = Str(turn, roleField) ?? Str(turn, roleField == "from" ? "role" : "from") ?? throw new FormatException($"{field}[{i}].{roleField} is missing");
            string text = Str(turn, textField) ?? Str(turn, textField == "value" ? "content" : "value") ?? throw new FormatException($"{field}[{i}].{textField} is missing");
            messages.Add(new ChatMessage(role.ToLowerInvariant() switch
            {
                "human" or "user" => ChatRole.User,
                "gpt" or "assistant" or "agent" or "bot" or "model" => ChatRole.Assistant,
                "system" => ChatRole.System,
                _ => throw new FormatException($"{field}[{i}].{roleField} is not a known role"),
            }, text));
        }
    }

    static string? Str(JsonObject o, string field)
    {
        var node = o[field];
        if (node is null || node.GetValueKind() == JsonValueKind.Null) return null;
        return node.GetValueKind() == JsonValueKind.String ? node.GetValue<string>() : throw new FormatException($"field \"{field}\" must be a string");
    }
}
