using MeLlama.Inference.ChatTemplates;

namespace MeLlama.Training.Finetune.Data;

public enum TruncationOutcome { Fit, PromptTruncated, ResponseTruncated, Dropped }

/// <summary>
/// Makes an encoded conversation fit a sample of <c>capacity</c> tokens. The rule:
/// <list type="number">
/// <item>If it fits, keep it.</item>
/// <item>Otherwise split it at the start of the final assistant reply: context before, reply (with its EOS) after.
/// Cut the context from the left (keeping a leading BOS) until the whole fits, but keep at least
/// <c>minPromptTokens</c> of it (the end of the question and the assistant cue).</item>
/// <item>If the reply alone still does not fit in what is left, cut it from the right (its EOS is lost); if fewer than
/// <c>minResponseTokens</c> of it would remain, drop the example.</item>
/// </list>
/// Earlier turns of a multi-turn conversation are part of the context and go first.
/// </summary>
public static class SftTruncation
{
    public static (EncodedChat? Chat, TruncationOutcome Outcome) Fit(EncodedChat chat, int capacity, int bosId, int minPromptTokens, int minResponseTokens)
    {
        int n = chat.Length;
        if (n <= capacity) return (chat, TruncationOutcome.Fit);

        // Start of the last run of trainable tokens = the final reply.
        int replyEnd = n;
        while (replyEnd > 0 && !chat.Trainable[replyEnd - 1]) replyEnd--;
        int replyStart = replyEnd;
        while (replyStart > 0 && chat.Trainable[replyStart - 1]) replyStart--;
        if (replyEnd == 0) return (null, TruncationOutcome.Dropped);   // nothing to learn from

        int reply = n - replyStart;   // trailing untrained tokens (none for our templates) stay with the reply
        int context = replyStart;
        int keepContext = Math.Max(Math.Min(minPromptTokens, context), capacity - reply);
        keepContext = Math.Min(keepContext, context);
        int keepReply = Math.Min(reply, capacity - keepContext);
        if (keepReply < Math.Min(minResponseTokens, reply) || keepReply <= 0) return (null, TruncationOutcome.Dropped);

        bool leadingBos = context > 0 && chat.Ids[0] == bosId && !chat.Trainable[0];
        var ids = new List<int>(capacity);
        var flags = new List<bool>(capacity);
        int contextFrom = replyStart - keepContext;
        if (leadingBos && keepContext > 0 && contextFrom > 0)
        {
            ids.Add(chat.Ids[0]);
            flags.Add(false);
            contextFrom++;
        }
        ids.AddRange(chat.Ids[contextFrom..replyStart]);
        flags.AddRange(chat.Trainable[contextFrom..replyStart]);
        ids.AddRange(chat.Ids[replyStart..(replyStart + keepReply)]);
        flags.AddRange(chat.Trainable[replyStart..(replyStart + keepReply)]);
        return (new EncodedChat(ids.ToArray(), flags.ToArray()), keepReply < reply ? TruncationOutcome.ResponseTruncated : TruncationOutcome.PromptTruncated);
    }
}
