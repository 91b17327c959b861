using MeLlama.Inference.ChatTemplates;

namespace MeLlama.Inference.Generation;

/// <summary>
/// A multi-turn conversation with a model: the history goes through the chat template every turn. When the prompt
/// would leave fewer than <see cref="GenerationOptions.MaxNewTokens"/> tokens of context, the oldest turns are
/// dropped (the system message is kept).
/// </summary>
public sealed class ChatSession(TextGenerator generator, IChatTemplate template, string? systemPrompt = null)
{
    readonly List<ChatMessage> _turns = [];

    public IReadOnlyList<ChatMessage> History => _turns;
    public IChatTemplate Template => template;
    /// <summary>Turns dropped from the front of the history so far to fit the context.</summary>
    public int DroppedTurns { get; private set; }

    public void Reset()
    {
        _turns.Clear();
        DroppedTurns = 0;
    }

    /// <summary>Adds the user's message, generates the reply (streamed to <paramref name="onText"/>) and keeps both in the history.</summary>
    public GenerationResult Send(string userMessage, GenerationOptions options, Action<string>? onText = null, CancellationToken cancel = default)
    {
        _turns.Add(ChatMessage.User(userMessage));
        int[] prompt = FitPrompt(options.MaxNewTokens);
        var result = generator.Generate(prompt, options, onText, cancel);
        _turns.Add(ChatMessage.Assistant(result.Text));
        return result;
    }

    int[] FitPrompt(int maxNewTokens)
    {
        int room = generator.ContextLength - Math.Min(maxNewTokens, generator.ContextLength / 2);
        while (true)
        {
            var messages = new List<ChatMessage>();
            if (!string.IsNullOrEmpty(systemPrompt)) messages.Add(ChatMessage.System(systemPrompt));
            messages.AddRange(_turns);
            int[] ids = ChatEncoder.EncodePrompt(template, generator.Tokenizer, messages);
            if (ids.Length <= room || _turns.Count <= 1) return ids;
            _turns.RemoveRange(0, 2);   // oldest user/assistant pair
            DroppedTurns++;
        }
    }
}
