using MeLlama.Tokenization;

namespace MeLlama.Inference.ChatTemplates;

/// <summary>Token ids of a rendered conversation, with the tokens the model learns to produce marked.</summary>
/// <param name="Ids">Token ids, BOS/EOS included where the template puts them.</param>
/// <param name="Trainable">Per token: true for assistant tokens (and the EOS ending a reply), the only ones the loss counts.</param>
public sealed record EncodedChat(int[] Ids, bool[] Trainable)
{
    public int Length => Ids.Length;
    public int TrainableCount => Trainable.Count(t => t);
}

/// <summary>
/// Turns template chunks into token ids. Text between two special tokens is encoded in one piece, exactly as the
/// whole rendered string would be (so the ids match what Hugging Face's apply_chat_template + tokenizer give, up to
/// special-token handling), and the prompt/answer boundary inside it is found from the encoding of the text before
/// the boundary: tokens before the longest common prefix are prompt, the rest answer (a token that straddles the
/// boundary counts as answer). Generation uses the same encoder, so its prompt ids are the prefix the model was
/// trained on.
/// </summary>
public static class ChatEncoder
{
    public static EncodedChat Encode(IChatTemplate template, ITextTokenizer tokenizer, IReadOnlyList<ChatMessage> messages, bool forGeneration)
    {
        Conversation.Validate(messages, forGeneration);
        return Encode(template.Render(messages), tokenizer);
    }

    /// <summary>The prompt ids for generating the assistant's next reply.</summary>
    public static int[] EncodePrompt(IChatTemplate template, ITextTokenizer tokenizer, IReadOnlyList<ChatMessage> messages) =>
        Encode(template, tokenizer, messages, forGeneration: true).Ids;

    public static EncodedChat Encode(IReadOnlyList<TemplateChunk> chunks, ITextTokenizer tokenizer)
    {
        var ids = new List<int>();
        var trainable = new List<bool>();
        var run = new List<TemplateChunk>();
        foreach (var chunk in chunks)
        {
            if (chunk.Special is { } special)
            {
                EncodeRun(run, tokenizer, ids, trainable);
                run.Clear();
                ids.Add(special == SpecialToken.Bos ? tokenizer.BosId : tokenizer.EosId);
                trainable.Add(chunk.Trainable);
            }
            else if (!string.IsNullOrEmpty(chunk.Text)) run.Add(chunk);
        }
        EncodeRun(run, tokenizer, ids, trainable);
        return new EncodedChat(ids.ToArray(), trainable.ToArray());
    }

    static void EncodeRun(List<TemplateChunk> run, ITextTokenizer tokenizer, List<int> ids, List<bool> trainable)
    {
        if (run.Count == 0) return;
        string text = string.Concat(run.Select(c => c.Text));
        int[] full = tokenizer.Encode(text);
        var flags = new bool[full.Length];
        // Walk the chunks; at each change of trainability find where the new region starts in token space.
        int regionStart = 0;
        bool regionTrainable = run[0].Trainable;
        int chars = run[0].Text!.Length;
        for (int i = 1; i < run.Count; i++)
        {
            if (run[i].Trainable != regionTrainable)
            {
                int boundary = Math.Max(regionStart, CommonPrefix(full, tokenizer.Encode(text[..chars])));
                Array.Fill(flags, regionTrainable, regionStart, boundary - regionStart);
                regionStart = boundary;
                regionTrainable = run[i].Trainable;
            }
            chars += run[i].Text!.Length;
        }
        Array.Fill(flags, regionTrainable, regionStart, full.Length - regionStart);
        ids.AddRange(full);
        trainable.AddRange(flags);
    }

    static int CommonPrefix(int[] a, int[] b)
    {
        int n = Math.Min(a.Length, b.Length), i = 0;
        while (i < n && a[i] == b[i]) i++;
        return i;
    }
}
