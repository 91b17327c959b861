using System.Text.Json.Nodes;

namespace MeLlama.Inference.ChatTemplates;

/// <summary>
/// How a conversation becomes model input. The same template must be used to fine-tune and to generate; it is stored
/// in the exported model folder (<see cref="ChatTemplateStore"/>) so generate/chat pick it up by themselves.
/// </summary>
public interface IChatTemplate
{
    /// <summary>Short id ("mellama", "llama2-chat", "none", or a custom one's name).</summary>
    string Id { get; }

    /// <summary>
    /// Renders <paramref name="messages"/> (validated with <see cref="Conversation"/>). A conversation that ends with
    /// a user message is rendered up to where the assistant's answer starts (the generation prompt).
    /// </summary>
    IReadOnlyList<TemplateChunk> Render(IReadOnlyList<ChatMessage> messages);

    /// <summary>The equivalent Hugging Face Jinja chat template (tokenizer_config.json "chat_template").</summary>
    string ToJinja();

    /// <summary>Everything needed to rebuild this template (<see cref="ChatTemplateRegistry.FromJson"/>).</summary>
    JsonObject ToJson();
}
