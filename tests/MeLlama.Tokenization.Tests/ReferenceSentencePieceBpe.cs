using MeLlama.Tokenization.SentencePiece;
using System.Text;

namespace MeLlama.Tokenization.Tests;

/// <summary>
/// A deliberately naive transcription of sentencepiece's BPE encode (bpe_model.cc + the identity
/// normaliser + byte fallback) working on strings over the whole text: no pair table, no segments, no heap.
/// The fast encoder must agree with it on any input.
/// </summary>
internal sealed class ReferenceSentencePieceBpe(SentencePieceModelFile model)
{
    readonly Dictionary<string, int> _mergeable = model.Pieces.Select((p, i) => (p, i)).Where(x => x.p.Type == PieceType.Normal).ToDictionary(x => x.p.Text, x => x.i);
    readonly Dictionary<string, int> _all = model.Pieces.Select((p, i) => (p, i)).GroupBy(x => x.p.Text).ToDictionary(g => g.Key, g => g.OrderBy(x => x.p.Type == PieceType.Normal ? 1 : 0).First().i);

    public List<int> Encode(string text)
    {
        var ids = new List<int>();
        if (text.Length == 0) return ids;
        string normalized = "\u2581" + text.Replace(' ', '\u2581');
        var symbols = new List<string>();
        for (int i = 0; i < normalized.Length; i += char.IsSurrogatePair(normalized, i) ? 2 : 1)
            symbols.Add(normalized.Substring(i, char.IsSurrogatePair(normalized, i) ? 2 : 1));
        while (true)
        {
            int best = -1;
            float bestScore = float.NegativeInfinity;
            for (int i = 0; i + 1 < symbols.Count; i++)
            {
                if (_mergeable.TryGetValue(symbols[i] + symbols[i + 1], out int id) && (best < 0 || model.Pieces[id].Score > bestScore))
                {
                    best = i;
                    bestScore = model.Pieces[id].Score;
                }
            }
            if (best < 0) break;
            symbols[best] += symbols[best + 1];
            symbols.RemoveAt(best + 1);
        }
        bool previousUnknown = false;
        foreach (var s in symbols)
        {
            if (_all.TryGetValue(s, out int id) && id != model.UnkId) { ids.Add(id); previousUnknown = false; }
            else if (model.ByteFallback) foreach (byte b in Encoding.UTF8.GetBytes(s)) ids.Add(_all[$"<0x{b:X2}>"]);
            else { if (!previousUnknown) ids.Add(model.UnkId); previousUnknown = true; }
        }
        return ids;
    }
}
