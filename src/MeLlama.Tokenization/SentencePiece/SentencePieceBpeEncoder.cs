using System.Text;

namespace MeLlama.Tokenization.SentencePiece;

/// <summary>
/// SentencePiece BPE encoding (the algorithm of sentencepiece's bpe_model.cc), reproduced id for id.
///
/// Why our own merge loop rather than Microsoft.ML.Tokenizers' <c>LlamaTokenizer.EncodeToIds</c>:
/// SentencePiece merges the adjacent pair with the highest score first and, on equal scores, the LEFTMOST
/// pair, re-evaluating neighbours after each merge. Microsoft.ML.Tokenizers 2.0.1 orders equal-score pairs
/// rightmost-first (its SymbolPair.CompareTo compares Left the other way round), so any text where two
/// equal-score candidates interact (a run of one repeated character such as 300 × "x", whitespace runs
/// whose pieces all score -1e9, ...) can come out differently. Whether a given text is affected is only
/// known by running the merges, so "detect and fall back" would cost a full second merge pass anyway. A
/// faithful loop is about as much code as such a detector, gives exact ids for every input, and is the
/// allocation-light fast path the data pipeline needs. The library still loads the same model for
/// decoding (see <see cref="LlamaSentencePieceTokenizer"/>) and serves as a cross-check in the tests.
///
/// Faithfulness notes:
/// - Normalisation: only the "identity" normaliser (LLaMA's) is supported: optional removal of extra
///   spaces, the dummy "▁" prefix, and ' ' → '▁'. Models with an NFKC charsmap are rejected at load.
/// - Symbols are Unicode code points (SentencePiece splits UTF-8 into characters; UTF-16 code points are
///   the same characters). Pair lookup goes through <see cref="PairMergeTable"/>.
/// - Out-of-vocabulary characters become their UTF-8 bytes as &lt;0xXX&gt; pieces (byte fallback) or
///   &lt;unk&gt;, consecutive unknowns collapsing into one as in SentencePieceProcessor::Encode.
/// - Independent segments: when no mergeable piece contains "c▁" with c ≠ '▁' (true for LLaMA-2: only
///   all-'▁' pieces contain an inner '▁'), no merge can cross a position where '▁' follows another
///   character, so the normalised text is cut there and each segment is merged alone. Within a segment the
///   order of merges equals the global order restricted to it, so results are identical; the heap stays
///   small and segments can be cached.
///
/// Thread-safe: all mutable working memory is per call or per thread.
/// </summary>
public sealed class SentencePieceBpeEncoder
{
    public const char SpaceSymbol = '\u2581';

    readonly int[] _bmpToId;                    // code unit → piece id, -1 when the character is not a piece
    readonly Dictionary<int, int> _astralToId;  // code points above U+FFFF
    readonly PairMergeTable _pairs;
    readonly int[] _byteToId;                   // byte value → id of <0xXX>, or -1
    readonly int _unkId;
    readonly bool _byteFallback;
    readonly bool _addDummyPrefix;
    readonly bool _removeExtraWhitespaces;
    readonly bool _escapeWhitespaces;
    readonly bool _segmentAtSpaceSymbols;
    readonly int _cacheCapacity;
    readonly ThreadLocal<Workspace> _workspace;

    /// <summary>Segments longer than this are never cached (rare, and they would bloat the cache).</summary>
    public const int MaxCachedSegmentLength = 48;
    public const int DefaultCacheCapacity = 1 << 16;

    public int VocabSize { get; }
    public int UnkId => _unkId;
    public bool SegmentsIndependently => _segmentAtSpaceSymbols;
    public int PairCount => _pairs.Count;

    /// <param name="model">The parsed tokenizer.model.</param>
    /// <param name="segmentCacheCapacity">
    /// Per-thread cache of segment → ids (words recur: in PubMed abstracts most segments are cache hits),
    /// cleared when it reaches this many entries; 0 disables it. Only used when segments are independent.
    /// </param>
    public SentencePieceBpeEncoder(SentencePieceModelFile model, int segmentCacheCapacity = DefaultCacheCapacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(segmentCacheCapacity);
        if (model.ModelType != 2)
            throw new NotSupportedException($"SentencePiece model type {model.ModelType} is not BPE (2); only BPE models (LLaMA's) are supported");
        if (model.PrecompiledCharsMapLength > 0)
            throw new NotSupportedException($"SentencePiece normaliser '{model.NormalizerName}' with a precompiled charsmap is not supported (LLaMA's is 'identity')");
        if (model.TreatWhitespaceAsSuffix)
            throw new NotSupportedException("SentencePiece models with treat_whitespace_as_suffix are not supported");
        var pieces = model.Pieces;
        for (int i = 0; i < pieces.Count; i++)
        {
            if (pieces[i].Type is PieceType.UserDefined or PieceType.Unused)
                throw new NotSupportedException($"piece {i} has type {pieces[i].Type}; user-defined and unused pieces are not supported");
        }

        VocabSize = pieces.Count;
        _unkId = model.UnkId;
        _byteFallback = model.ByteFallback;
        _addDummyPrefix = model.AddDummyPrefix;
        _removeExtraWhitespaces = model.RemoveExtraWhitespaces;
        _escapeWhitespaces = model.EscapeWhitespaces;

        // SentencePiece's PieceToId looks in the reserved pieces (control, unknown, byte) first, then in the
        // mergeable ones; only mergeable pieces (normal here) can be produced by a merge.
        var lookup = new Dictionary<string, int>(pieces.Count, StringComparer.Ordinal);
        for (int i = 0; i < pieces.Count; i++)
            if (pieces[i].Type != PieceType.Normal) lookup.TryAdd(pieces[i].Text, i);
        for (int i = 0; i < pieces.Count; i++)
            if (pieces[i].Type == PieceType.Normal) lookup.TryAdd(pieces[i].Text, i);

        _bmpToId = new int[char.MaxValue + 1];
        Array.Fill(_bmpToId, -1);
        _astralToId = new Dictionary<int, int>();
        foreach (var (text, id) in lookup)
        {
            if (text.Length == 1) _bmpToId[text[0]] = id;
            else if (text.Length == 2 && char.IsSurrogatePair(text[0], text[1])) _astralToId[char.ConvertToUtf32(text[0], text[1])] = id;
        }

        _byteToId = new int[256];
        Array.Fill(_byteToId, -1);
        for (int i = 0; i < pieces.Count; i++)
        {
            if (pieces[i].Type == PieceType.Byte && TryParseBytePiece(pieces[i].Text, out byte b)) _byteToId[b] = i;
        }
        if (_byteFallback && Array.IndexOf(_byteToId, -1) >= 0)
            throw new InvalidDataException("SentencePiece model enables byte fallback but lacks some <0xXX> pieces");

        var alternate = lookup.GetAlternateLookup<ReadOnlySpan<char>>();
        var entries = new List<(int, int, int, float)>();
        bool crossesBoundary = false;
        for (int id = 0; id < pieces.Count; id++)
        {
            if (pieces[id].Type != PieceType.Normal) continue;
            string text = pieces[id].Text;
            for (int k = 0; k < text.Length; k += char.IsSurrogatePair(text, k) ? 2 : 1)
            {
                int cpLen = char.IsSurrogatePair(text, k) ? 2 : 1;
                if (!alternate.ContainsKey(text.AsSpan(k, cpLen)))
                    throw new NotSupportedException($"piece {id} contains a character that is not itself a piece; such models are not supported");
                if (k > 0 && text[k] == SpaceSymbol && text[k - 1] != SpaceSymbol) crossesBoundary = true;
                if (k == 0) continue;
                if (alternate.TryGetValue(text.AsSpan(0, k), out int left) && alternate.TryGetValue(text.AsSpan(k), out int right))
                    entries.Add((left, right, id, pieces[id].Score));
            }
        }
        _pairs = new PairMergeTable(entries);
        _segmentAtSpaceSymbols = !crossesBoundary;
        _cacheCapacity = _segmentAtSpaceSymbols ? segmentCacheCapacity : 0;
        _workspace = new ThreadLocal<Workspace>(() => new Workspace(_cacheCapacity));
    }

    static bool TryParseBytePiece(string text, out byte value)
    {
        value = 0;
        return text.Length == 6 && text.StartsWith("<0x", StringComparison.Ordinal) && text[5] == '>'
            && byte.TryParse(text.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out value);
    }

    /// <summary>Ids of <paramref name="text"/> (no BOS/EOS), appended after <paramref name="prefix"/> and before <paramref name="suffix"/> ids (−1 = none).</summary>
    public int[] Encode(ReadOnlySpan<char> text, int prefix = -1, int suffix = -1)
    {
        var ws = _workspace.Value!;
        ws.OutputCount = 0;
        if (prefix >= 0) ws.Emit(prefix);
        EncodeInto(text, ws);
        if (suffix >= 0) ws.Emit(suffix);
        var result = ws.Output.AsSpan(0, ws.OutputCount).ToArray();
        ws.ShrinkIfHuge();
        return result;
    }

    void EncodeInto(ReadOnlySpan<char> text, Workspace ws)
    {
        int length = Normalize(text, ws);
        if (length == 0) return;
        var normalized = ws.Normalized.AsSpan(0, length);
        if (!_segmentAtSpaceSymbols)
        {
            EncodeSegment(normalized, ws);
            return;
        }
        int start = 0;
        for (int i = 1; i < normalized.Length; i++)
        {
            if (normalized[i] == SpaceSymbol && normalized[i - 1] != SpaceSymbol)
            {
                EncodeSegmentCached(normalized[start..i], ws);
                start = i;
            }
        }
        EncodeSegmentCached(normalized[start..], ws);
    }

    void EncodeSegmentCached(ReadOnlySpan<char> segment, Workspace ws)
    {
        if (ws.Cache is not { } cache || segment.Length > MaxCachedSegmentLength)
        {
            EncodeSegment(segment, ws);
            return;
        }
        if (ws.CacheLookup.TryGetValue(segment, out int[]? cached))
        {
            ws.Emit(cached);
            return;
        }
        int before = ws.OutputCount;
        EncodeSegment(segment, ws);
        if (cache.Count >= _cacheCapacity) cache.Clear();
        ws.CacheLookup[segment] = ws.Output.AsSpan(before, ws.OutputCount - before).ToArray();
    }

    /// <summary>SentencePiece's identity normaliser: writes the normalised text into the workspace; returns its length.</summary>
    int Normalize(ReadOnlySpan<char> text, Workspace ws)
    {
        if (_removeExtraWhitespaces) text = text.Trim(' ');
        if (text.IsEmpty) return 0;
        var buffer = ws.EnsureNormalized(text.Length + 1);
        int n = 0;
        if (_addDummyPrefix) buffer[n++] = _escapeWhitespaces ? SpaceSymbol : ' ';
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (c == ' ')
            {
                if (_removeExtraWhitespaces && i > 0 && text[i - 1] == ' ') continue;
                buffer[n++] = _escapeWhitespaces ? SpaceSymbol : ' ';
            }
            else buffer[n++] = c;
        }
        return n;
    }

    /// <summary>The BPE merge loop of bpe_model.cc over one segment; emits the ids into the workspace.</summary>
    void EncodeSegment(ReadOnlySpan<char> segment, Workspace ws)
    {
        var symbols = ws.EnsureSymbols(segment.Length);
        int count = 0;
        for (int i = 0; i < segment.Length;)
        {
            int cpLen = char.IsHighSurrogate(segment[i]) && i + 1 < segment.Length && char.IsLowSurrogate(segment[i + 1]) ? 2 : 1;
            int id = cpLen == 1 ? _bmpToId[segment[i]] : _astralToId.GetValueOrDefault(char.ConvertToUtf32(segment[i], segment[i + 1]), -1);
            symbols[count] = new Symbol { Start = i, Length = cpLen, Id = id, Prev = count - 1, Next = i + cpLen < segment.Length ? count + 1 : -1 };
            count++;
            i += cpLen;
        }

        if (count > 1)
        {
            var heap = new PairHeap(ws.EnsureHeap(3 * count));
            for (int i = 1; i < count; i++) TryAddPair(symbols, i - 1, i, ref heap);
            while (heap.Count > 0)
            {
                var top = heap.Pop();
                ref var left = ref symbols[top.Left];
                ref var right = ref symbols[top.Right];
                // Stale entry: one side was merged away or grew since the pair was queued.
                if (left.Length == 0 || right.Length == 0 || left.Length + right.Length != top.Length) continue;
                left.Length = top.Length;
                left.Id = top.MergedId;
                left.Next = right.Next;
                if (right.Next >= 0) symbols[right.Next].Prev = top.Left;
                right.Length = 0;
                if (left.Prev >= 0) TryAddPair(symbols, left.Prev, top.Left, ref heap);
                if (left.Next >= 0) TryAddPair(symbols, top.Left, left.Next, ref heap);
            }
        }

        bool previousUnknown = false;
        for (int i = 0; i >= 0; i = symbols[i].Next)
        {
            int id = symbols[i].Id;
            if (id >= 0 && id != _unkId)
            {
                ws.Emit(id);
                previousUnknown = false;
            }
            else if (_byteFallback)
            {
                EmitBytes(segment.Slice(symbols[i].Start, symbols[i].Length), ws);
            }
            else
            {
                if (!previousUnknown) ws.Emit(_unkId);
                previousUnknown = true;
            }
        }
    }

    void TryAddPair(Symbol[] symbols, int left, int right, ref PairHeap heap)
    {
        int leftId = symbols[left].Id, rightId = symbols[right].Id;
        if (leftId < 0 || rightId < 0) return;
        if (_pairs.TryGet(leftId, rightId, out int merged, out float score))
            heap.Push(new PairCandidate(score, left, right, merged, symbols[left].Length + symbols[right].Length));
    }

    void EmitBytes(ReadOnlySpan<char> character, Workspace ws)
    {
        Span<byte> utf8 = stackalloc byte[8];
        // A lone surrogate is not valid UTF-16; Encoding.UTF8 substitutes U+FFFD as Python would refuse it.
        int n = Encoding.UTF8.GetBytes(character, utf8);
        for (int b = 0; b < n; b++) ws.Emit(_byteToId[utf8[b]]);
    }

    internal struct Symbol
    {
        public int Start, Length, Id, Prev, Next;
    }

    internal readonly record struct PairCandidate(float Score, int Left, int Right, int MergedId, int Length);

    /// <summary>Binary max-heap: higher score first, then smaller left index (SentencePiece's order).</summary>
    internal ref struct PairHeap(PairCandidate[] items)
    {
        readonly PairCandidate[] _items = items;
        public int Count;

        static bool Before(in PairCandidate a, in PairCandidate b) => a.Score > b.Score || (a.Score == b.Score && a.Left < b.Left);

        public void Push(PairCandidate item)
        {
            int i = Count++;
            while (i > 0)
            {
                int parent = (i - 1) >> 1;
                if (!Before(item, _items[parent])) break;
                _items[i] = _items[parent];
                i = parent;
            }
            _items[i] = item;
        }

        public PairCandidate Pop()
        {
            var top = _items[0];
            var last = _items[--Count];
            int i = 0;
            while (true)
            {
                int child = 2 * i + 1;
                if (child >= Count) break;
                if (child + 1 < Count && Before(_items[child + 1], _items[child])) child++;
                if (!Before(_items[child], last)) break;
                _items[i] = _items[child];
                i = child;
            }
            if (Count > 0) _items[i] = last;
            return top;
        }
    }

    /// <summary>Per-thread working memory, grown on demand and reused across calls.</summary>
    sealed class Workspace
    {
        public Workspace(int cacheCapacity)
        {
            if (cacheCapacity > 0)
            {
                Cache = new Dictionary<string, int[]>(StringComparer.Ordinal);
                CacheLookup = Cache.GetAlternateLookup<ReadOnlySpan<char>>();
            }
        }

        public readonly Dictionary<string, int[]>? Cache;
        public readonly Dictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> CacheLookup;
        public char[] Normalized = new char[256];
        public Symbol[] Symbols = new Symbol[64];
        public PairCandidate[] Heap = new PairCandidate[192];
        public int[] Output = new int[256];
        public int OutputCount;

        public char[] EnsureNormalized(int n) => Normalized.Length >= n ? Normalized : Normalized = new char[Math.Max(n, 2 * Normalized.Length)];
        public Symbol[] EnsureSymbols(int n) => Symbols.Length >= n ? Symbols : Symbols = new Symbol[Math.Max(n, 2 * Symbols.Length)];
        public PairCandidate[] EnsureHeap(int n) => Heap.Length >= n ? Heap : Heap = new PairCandidate[Math.Max(n, 2 * Heap.Length)];

        /// <summary>One huge document must not pin megabytes per thread for the life of the tokenizer.</summary>
        public void ShrinkIfHuge()
        {
            const int Limit = 1 << 20;
            if (Normalized.Length > Limit) Normalized = new char[256];
            if (Symbols.Length > Limit) Symbols = new Symbol[64];
            if (Heap.Length > Limit) Heap = new PairCandidate[192];
            if (Output.Length > Limit) Output = new int[256];
        }

        public void Emit(int id)
        {
            if (OutputCount == Output.Length) Array.Resize(ref Output, 2 * Output.Length);
            Output[OutputCount++] = id;
        }

        public void Emit(int[] ids)
        {
            if (OutputCount + ids.Length > Output.Length) Array.Resize(ref Output, Math.Max(2 * Output.Length, OutputCount + ids.Length));
            ids.CopyTo(Output, OutputCount);
            OutputCount += ids.Length;
        }
    }
}
