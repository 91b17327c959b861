using System.Text;
using System.Text.Json;

namespace MeLlama.Tokenization;

/// <summary>
/// Turns tiktoken's GPT-2 ranks (token bytes → id) into Hugging Face's vocab.json and merges.txt.
/// HF spells each token's bytes with GPT-2's byte→unicode table; the merge list is recovered by noting that
/// token r was created by merging the two parts that byte-level BPE with only ranks &lt; r leaves
/// (GPT-2's ids are its merge order: 256 byte tokens, then merge i gives id 256 + i).
/// </summary>
internal sealed class Gpt2HfVocabulary
{
    readonly byte[][] _tokens; // by rank
    readonly string[] _byteToUnicode = BuildByteToUnicode();

    Gpt2HfVocabulary(byte[][] tokens) => _tokens = tokens;

    public int Count => _tokens.Length;

    public static Gpt2HfVocabulary FromRankFile(byte[] rankFile)
    {
        // The package stores "Capacity: N" then one base64 token per line, its rank being its position;
        // tiktoken's own format is "base64 rank". Both are accepted.
        var tokens = new List<(int Rank, byte[] Bytes)>();
        int next = 0;
        foreach (var line in Encoding.ASCII.GetString(rankFile).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
            int space = line.IndexOf(' ');
            int rank = space < 0 ? next : int.Parse(line.AsSpan(space + 1), System.Globalization.CultureInfo.InvariantCulture);
            tokens.Add((rank, Convert.FromBase64String(space < 0 ? line : line[..space])));
            next = rank + 1;
        }
        var byRank = new byte[tokens.Count][];
        foreach (var (rank, bytes) in tokens)
        {
            if ((uint)rank >= (uint)byRank.Length || byRank[rank] != null) throw new InvalidDataException($"gpt2.tiktoken: ranks are not 0..{byRank.Length - 1}");
            byRank[rank] = bytes;
        }
        return new Gpt2HfVocabulary(byRank);
    }

    /// <summary>GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to U+0100 upwards.</summary>
    static string[] BuildByteToUnicode()
    {
        var map = new string[256];
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = ((char)(printable ? b : 256 + next++)).ToString();
        }
        return map;
    }

    public string Spell(ReadOnlySpan<byte> bytes)
    {
        var sb = new StringBuilder(bytes.Length);
        foreach (byte b in bytes) sb.Append(_byteToUnicode[b]);
        return sb.ToString();
    }

    public void WriteVocabJson(Utf8JsonWriter w, string specialToken, int specialId)
    {
        w.WriteStartObject();
        for (int id = 0; id < _tokens.Length; id++) w.WriteNumber(Spell(_tokens[id]), id);
        w.WriteNumber(specialToken, specialId);
        w.WriteEndObject();
    }

    /// <summary>merges.txt: "#version: 0.2" then one "left right" line per token from rank 256 on, in rank order.</summary>
    public string MergesText()
    {
        // Tokens as Latin-1 strings (one char per byte): cheap to concatenate and hash.
        var rankOf = new Dictionary<string, int>(_tokens.Length, StringComparer.Ordinal);
        for (int id = 0; id < _tokens.Length; id++) rankOf[Encoding.Latin1.GetString(_tokens[id])] = id;
        var sb = new StringBuilder("#version: 0.2\n");
        for (int rank = 0; rank < _tokens.Length; rank++)
        {
            if (_tokens[rank].Length == 1) continue;
            var (left, right) = SplitByLowerRanks(Encoding.Latin1.GetString(_tokens[rank]), rank, rankOf);
            sb.Append(Spell(Encoding.Latin1.GetBytes(left))).Append(' ').Append(Spell(Encoding.Latin1.GetBytes(right))).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>Byte-level BPE of <paramref name="token"/> with ranks below <paramref name="maxRank"/>; must end in two parts.</summary>
    static (string Left, string Right) SplitByLowerRanks(string token, int maxRank, Dictionary<string, int> rankOf)
    {
        var parts = token.Select(c => c.ToString()).ToList();
        while (parts.Count > 2)
        {
            int best = -1, bestRank = maxRank;
            for (int i = 0; i + 1 < parts.Count; i++)
            {
                if (rankOf.TryGetValue(parts[i] + parts[i + 1], out int r) && r < bestRank)
                {
                    best = i;
                    bestRank = r;
                }
            }
            if (best < 0) break;
            parts[best] += parts[best + 1];
            parts.RemoveAt(best + 1);
        }
        if (parts.Count != 2) throw new InvalidDataException($"gpt2.tiktoken: token of rank {maxRank} is not the merge of two lower-ranked tokens");
        return (parts[0], parts[1]);
    }
}
