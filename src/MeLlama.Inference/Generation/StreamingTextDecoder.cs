using MeLlama.Tokenization;

namespace MeLlama.Inference.Generation;

/// <summary>
/// Turns generated token ids into text as they arrive, for printing while generating. A token can end in the middle
/// of a multi-byte character (byte-fallback pieces): such text decodes to U+FFFD and is held back until the
/// character is complete. The whole generated sequence is re-decoded per token, so the text is always exactly
/// decode(all ids), what a non-streaming caller gets. (A short window, text = decode(ids[prefix..]) −
/// decode(ids[prefix..read]) as in HF text-generation-inference, lost real spaces: SentencePiece drops the leading
/// space of the first word piece after nothing but byte-fallback pieces, so a window starting on the byte piece for
/// "B" turned "B DLL" into "BDLL". Re-decoding costs O(n²) token lookups, a few ms for a thousand tokens.)
/// Text that could be the start of a stop string is held back too; once a stop string appears the text is cut
/// before it and <see cref="Stopped"/> is set.
/// </summary>
public sealed class StreamingTextDecoder(ITextTokenizer tokenizer, IReadOnlyList<string>? stopStrings = null)
{
    readonly List<int> _ids = [];
    readonly IReadOnlyList<string> _stops = stopStrings ?? [];
    readonly System.Text.StringBuilder _text = new();   // decoded, not yet checked against stop strings beyond _emitted
    int _emitted;

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
        string full = tokenizer.Decode(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_ids));
        if (full.EndsWith('\uFFFD')) return "";   // a character still incomplete
        Replace(full);
        return Release(final: false);
    }

    /// <summary>
    /// Takes the part of <paramref name="full"/> beyond the text so far. SentencePiece and byte-level BPE decoding of
    /// more tokens only appends to the decoding of fewer (U+FFFD-ended text is never taken), so the text so far is a
    /// prefix of <paramref name="full"/>; text already handed out could not be taken back anyway.
    /// </summary>
    void Replace(string full)
    {
        if (full.Length > _text.Length) _text.Append(full, _text.Length, full.Length - _text.Length);
    }

    /// <summary>Decodes whatever is still pending (incomplete characters included) and returns the unshown rest.</summary>
    public string Flush()
    {
        if (!Stopped) Replace(tokenizer.Decode(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_ids)));
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
