using MeLlama.Inference.ChatTemplates;
using MeLlama.Tokenization;

namespace MeLlama.Training.Finetune.Data;

/// <summary>How conversations become fixed-length training rows.</summary>
public sealed record SftOptions
{
    /// <summary>Predicted positions per row (rows hold SeqLen + 1 tokens).</summary>
    public required int SeqLen { get; init; }
    /// <summary>Pack several examples into a row (fewer pad tokens) instead of one padded example per row.</summary>
    public bool Pack { get; init; } = true;
    /// <summary>Context tokens always kept when an example is too long (see <see cref="SftTruncation"/>).</summary>
    public int MinPromptTokens { get; init; } = 16;
    /// <summary>Drop an over-long example rather than keep fewer reply tokens than this.</summary>
    public int MinResponseTokens { get; init; } = 8;
}

/// <summary>What building the rows did (counts only: no text).</summary>
public sealed record SftStats
{
    public int Examples { get; init; }
    public int Fit { get; init; }
    public int PromptTruncated { get; init; }
    public int ResponseTruncated { get; init; }
    public int Dropped { get; init; }
    public int Rows { get; init; }
    public long TargetTokens { get; init; }
    public long PaddingTokens { get; init; }
}

/// <summary>
/// Tokenized, masked, truncated and packed/padded rows of instruction data (see <see cref="SftRows"/> for the encoding).
/// Packing is greedy in the given order: an example never spans two rows; a row is closed and padded when the next
/// example does not fit. Packed examples attend to the earlier ones in their row (the model has no document mask), but
/// the loss never crosses an example boundary: each example starts with an untrained BOS.
/// </summary>
public sealed class SftDataset
{
    SftDataset(IReadOnlyList<long[]> rows, SftStats stats, int seqLen)
    {
        Rows = rows;
        Stats = stats;
        SeqLen = seqLen;
    }

    public IReadOnlyList<long[]> Rows { get; }
    public SftStats Stats { get; }
    public int SeqLen { get; }
    public int SampleTokens => SeqLen + 1;

    public static SftDataset Build(IReadOnlyList<InstructionExample> examples, IChatTemplate template, ITextTokenizer tokenizer, SftOptions options)
    {
        if (options.SeqLen < 2) throw new ArgumentException($"seq_len must be >= 2 (got {options.SeqLen})");
        int capacity = options.SeqLen + 1;
        int fit = 0, promptCut = 0, replyCut = 0, dropped = 0;
        var encoded = new List<EncodedChat>(examples.Count);
        foreach (var example in examples)
        {
            var chat = ChatEncoder.Encode(template, tokenizer, example.Messages, forGeneration: false);
            var (kept, outcome) = SftTruncation.Fit(chat, capacity, tokenizer.BosId, options.MinPromptTokens, options.MinResponseTokens);
            switch (outcome)
            {
                case TruncationOutcome.Fit: fit++; break;
                case TruncationOutcome.PromptTruncated: promptCut++; break;
                case TruncationOutcome.ResponseTruncated: replyCut++; break;
                default: dropped++; break;
            }
            if (kept is not null) encoded.Add(kept);
        }

        long pad = SftRows.Encode(tokenizer.EosId, target: false);
        var rows = new List<long[]>();
        long targets = 0, padding = 0;
        long[]? row = null;
        int used = 0;
        void Close()
        {
            if (row is null) return;
            Array.Fill(row, pad, used, capacity - used);
            padding += capacity - used;
            rows.Add(row);
            row = null;
        }
        foreach (var chat in encoded)
        {
            if (row is not null && (!options.Pack || used + chat.Length > capacity)) Close();
            if (row is null) { row = new long[capacity]; used = 0; }
            for (int i = 0; i < chat.Length; i++)
            {
                // A target at the very start of a row has nothing before it to predict it from.
                bool target = chat.Trainable[i] && used + i > 0;
                row[used + i] = SftRows.Encode(chat.Ids[i], target);
                if (target) targets++;
            }
            used += chat.Length;
        }
        Close();
        var stats = new SftStats
        {
            Examples = examples.Count, Fit = fit, PromptTruncated = promptCut, ResponseTruncated = replyCut, Dropped = dropped,
            Rows = rows.Count, TargetTokens = targets, PaddingTokens = padding,
        };
        return new SftDataset(rows, stats, options.SeqLen);
    }
}
