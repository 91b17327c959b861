using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using MeLlama.Data.Cleaning;
using MeLlama.Data.Config;
using MeLlama.Data.Readers;
using MeLlama.Tokenization;

namespace MeLlama.Data.Prepare;

/// <summary>The outcome of cleaning and tokenizing one record (pure function of the record: safe on any thread).</summary>
public readonly record struct ProcessedRecord(CorpusItem Item, string? Drop, int[]? Tokens, UInt128 Hash, bool Eval, int TextBytes);

/// <summary>
/// Clean-up + content hash + held-out decision + tokenization of one record. Stateless, so batches can run on
/// any number of threads; the in-order writer does de-duplication.
/// </summary>
public sealed class DocumentProcessor(DataConfig config, TextCleaner cleaner, ITextTokenizer tokenizer)
{
    public ProcessedRecord Process(CorpusItem item)
    {
        if (item.FileEnd != null || item.Problem != null || item.Text is null) return new(item, null, null, default, false, 0);
        string raw = item.Text;
        int textBytes = Encoding.UTF8.GetByteCount(raw);
        if (raw.Length > config.MaxChars) return new(item, Problems.TooLarge, null, default, false, textBytes);
        string text = cleaner.Clean(raw);
        if (text.Length == 0) return new(item, Problems.Empty, null, default, false, textBytes);
        if (text.Length < config.MinChars) return new(item, Problems.TooShort, null, default, false, textBytes);
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(text), digest);
        var hash = BinaryPrimitives.ReadUInt128LittleEndian(digest);
        bool eval = IsHeldOut(BinaryPrimitives.ReadUInt64LittleEndian(digest[16..]), config.EvalFraction);
        int[] ids = tokenizer.Encode(text);
        var tokens = new int[ids.Length + 1];
        ids.CopyTo(tokens, 0);
        tokens[^1] = tokenizer.EosId;
        return new(item, null, tokens, hash, eval, textBytes);
    }

    /// <summary>Held-out membership from 53 bits of the content hash: the same document is always on the same side.</summary>
    public static bool IsHeldOut(ulong hashBits, double fraction) => (hashBits >> 11) * (1.0 / (1UL << 53)) < fraction;
}
