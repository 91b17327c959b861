namespace MeLlama.Inference.ChatTemplates;

public enum ChatRole { System, User, Assistant }

/// <summary>One message of a conversation.</summary>
public sealed record ChatMessage(ChatRole Role, string Content)
{
    public static ChatMessage System(string content) => new(ChatRole.System, content);
    public static ChatMessage User(string content) => new(ChatRole.User, content);
    public static ChatMessage Assistant(string content) => new(ChatRole.Assistant, content);

    /// <summary>The role as chat templates and HF's apply_chat_template name it ("system", "user", "assistant").</summary>
    public string RoleName => Role switch
    {
        ChatRole.System => "system",
        ChatRole.User => "user",
        _ => "assistant",
    };
}

/// <summary>Shape rules every template relies on.</summary>
public static class Conversation
{
    /// <summary>
    /// Checks that <paramref name="messages"/> is an optional system message followed by user/assistant turns that
    /// alternate, starting with user. A conversation to train on must end with an assistant message; one to
    /// generate from (<paramref name="forGeneration"/>) must end with a user message. Returns the problem, or null.
    /// </summary>
    public static string? Problem(IReadOnlyList<ChatMessage> messages, bool forGeneration)
    {
        if (messages.Count == 0) return "the conversation is empty";
        int start = messages[0].Role == ChatRole.System ? 1 : 0;
        if (start == messages.Count) return "the conversation has only a system message";
        for (int i = start; i < messages.Count; i++)
        {
            var expected = (i - start) % 2 == 0 ? ChatRole.User : ChatRole.Assistant;
            if (messages[i].Role != expected)
                return messages[i].Role == ChatRole.System
                    ? $"message {i} is a system message; only the first message may be one"
                    : $"message {i} is from the {messages[i].RoleName} but the {(expected == ChatRole.User ? "user" : "assistant")} should speak (turns must alternate user/assistant, starting with user)";
        }
        var last = messages[^1].Role;
        if (forGeneration && last != ChatRole.User) return "the last message must be from the user (the model answers it)";
        if (!forGeneration && last != ChatRole.Assistant) return "the last message must be from the assistant (it is what the model learns to say)";
        return null;
    }

    public static void Validate(IReadOnlyList<ChatMessage> messages, bool forGeneration)
    {
        if (Problem(messages, forGeneration) is { } problem) throw new ArgumentException(problem, nameof(messages));
    }
}
