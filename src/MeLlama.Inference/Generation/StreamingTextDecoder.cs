using MeLlama.Tokenization;

namespace MeLlama.Inference.Generation;

/// <summary>
/// Turns generated token ids into text as they arrive, for printing while generating. A token can end in the middle
/// of a multi-byte character (byte-fallback pieces): such text decodes to U+FFFD and is held back until the
/// character is complete. Only a short window is re-decoded per token (the approach of HF text-generation-inference):
/// text = decode(ids[prefix..]) − decode(ids[prefix..read]), which also keeps SentencePiece's leading-space rule right.
/// The window only ever starts at a token that decodes to whole text on its own: decoders drop the leading space of
/// the first word piece they output, and one that starts on byte-fallback pieces would drop a real space.
/// Text that could be the start of a stop string is held back too; once a stop string appears the text is cut
/// before it and <see cref="Stopped"/> is set.
/// </summary>
public sealed class StreamingTextDecoder(ITextTokenizer tokenizer, IReadOnlyList<string>? stopStrings = null)
{
    readonly List<int> _ids = [];
    readonly IReadOnlyList<string> _stops = stopStrings ?? [];
    readonly System.Text.StringBuilder _text = new();   // decoded, not yet checked against stop strings beyond _emitted
    int _prefixOffset, _readOffset, _emitted;

    /// <summary>All text decoded so far (cut at the stop string once stopped).</summary>
    public string Text => _text.ToString();
    public bool Stopped { get; private set; }
    /// <summary>The stop string that ended the text, if any.</summary>
    public string? StopString { get; private set; }

    /// <summary>Adds a token; returns the text that became safe to show (possibly empty).</summary>
    public string Push(int id)
    {
        if (Stopped) return "";
        _ids.Add(id);
        var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_ids);
        string prefix = _readOffset > _prefixOffset ? tokenizer.Decode(span[_prefixOffset.._readOffset]) : "";
        string full = tokenizer.Decode(span[_prefixOffset..]);
        if (full.Length <= prefix.Length || full.EndsWith('\uFFFD')) return "";
        if (!full.StartsWith(prefix, StringComparison.Ordinal)) prefix = "";   // defensive: never drop text
        _text.Append(full, prefix.Length, full.Length - prefix.Length);
        if (StartsCleanly(_ids[_readOffset])) _prefixOffset = _readOffset;
        _readOffset = _ids.Count;
        return Release(final: false);
    }

    bool StartsCleanly(int id)
    {
        string alone = tokenizer.Decode([id]);
        return alone.Length > 0 && !alone.Contains('\uFFFD');
    }

    /// <summary>Decodes whatever is still pending (incomplete characters included) and returns the unshown rest.</summary>
    public string Flush()
    {
        if (!Stopped && _readOffset < _ids.Count)
        {
            var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_ids);
            string prefix = _readOffset > _prefixOffset ? tokenizer.Decode(span[_prefixOffset.._readOffset]) : "";
            string full = tokenizer.Decode(span[_prefixOffset..]);
            if (full.Length > prefix.Length && full.StartsWith(prefix, StringComparison.Ordinal))
                _text.Append(full, prefix.Length, full.Length - prefix.Length);
            _prefixOffset = _readOffset = _ids.Count;
        }
        return Release(final: true);
    }

    string Release(bool final)
    {
        string text = _text.ToString();
        if (!Stopped && _stops.Count > 0)
        {
            int longest = _stops.Max(s => s.Length);
            int from = Math.Max(0, _emitted - longest + 1);
            int cut = -1;
            foreach (var stop in _stops)
            {
                int at = text.IndexOf(stop, from, StringComparison.Ordinal);
                if (at >= 0 && (cut < 0 || at < cut)) { cut = at; StopString = stop; }
            }
            if (cut >= 0)
            {
                Stopped = true;
                _text.Length = cut;
                text = _text.ToString();
                cut = Math.Max(cut, _emitted);
                string tail = text[_emitted..cut];
                _emitted = cut;
                return tail;
            }
        }
        int safe = text.Length;
        if (!final && !Stopped)
        {
            // Hold back a suffix that might grow into a stop string.
            foreach (var stop in _stops)
                for (int len = Math.Min(stop.Length - 1, text.Length); len > 0; len--)
                    if (string.CompareOrdinal(text, text.Length - len, stop, 0, len) == 0) { safe = Math.Min(safe, text.Length - len); break; }
        }
        safe = Math.Max(safe, _emitted);
        string result = text[_emitted..safe];
        _emitted = safe;
        return result;
    }
}
