namespace MeLlama.Inference.ChatTemplates;

public enum SpecialToken { Bos, Eos }

/// <summary>
/// A piece of a rendered conversation: literal text, or a special token inserted by id (never by text, so data
/// cannot forge BOS/EOS). <see cref="Trainable"/> marks what the model learns to produce (assistant replies and the
/// EOS that ends them); the loss counts only those tokens.
/// </summary>
public readonly record struct TemplateChunk(string? Text, SpecialToken? Special, bool Trainable)
{
    public static TemplateChunk Prompt(string text) => new(text, null, false);
    public static TemplateChunk Answer(string text) => new(text, null, true);
    public static TemplateChunk Bos => new(null, SpecialToken.Bos, false);
    public static TemplateChunk Eos(bool trainable) => new(null, SpecialToken.Eos, trainable);
}
