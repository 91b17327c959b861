using System.Text.Json;
using MeLlama.Data.Config;

namespace MeLlama.Data.Readers;

/// <summary>
/// One JSON file holding many records, as an object of records (PubMedQA's ori_pqal.json:
/// {"21645374": {"CONTEXTS": [...], "LONG_ANSWER": "..."}, ...}) or an array of records. Streamed with
/// Utf8JsonReader over a refilled buffer: only the records of one buffer are in memory. A record missing a
/// field is a record-level problem; broken JSON syntax ends the file (nothing after it can be trusted).
/// </summary>
sealed class JsonRecordsReader(SourceConfig source, int maxRecordBytes) : IRecordReader
{
    public IEnumerable<SourceRecord> Read(Stream content, string path)
    {
        var parser = new Parser(content, source, maxRecordBytes);
        var batch = new List<SourceRecord>();
        while (parser.ParseAvailable(batch))
        {
            foreach (var r in batch) yield return r;
            batch.Clear();
        }
        foreach (var r in batch) yield return r;
    }

    sealed class Parser(Stream stream, SourceConfig source, int maxRecordBytes)
    {
        byte[] _buf = new byte[1 << 20];
        int _start, _end;
        bool _eof, _rootSeen, _rootIsArray, _done;
        JsonReaderState _state = new(new JsonReaderOptions { CommentHandling = JsonCommentHandling.Skip });
        long _countedTo; // absolute offset up to which newlines were counted
        long _lineAtCounted = 1;
        long _absStart; // absolute file offset of _buf[_start]
        InputFileException? _pending;

        /// <summary>Adds the records available now; returns false once the file is finished.</summary>
        public bool ParseAvailable(List<SourceRecord> output)
        {
            if (_pending is { } pending) { _pending = null; _done = true; throw pending; }
            if (_done) return false;
            if (_end == _start && !_eof) Fill();
            var reader = new Utf8JsonReader(_buf.AsSpan(_start, _end - _start), _eof, _state);
            long safeConsumed = 0;
            var safeState = _state;
            try
            {
                while (true)
                {
                    if (!reader.Read()) break;
                    if (!_rootSeen)
                    {
                        if (reader.TokenType is not (JsonTokenType.StartObject or JsonTokenType.StartArray))
                            throw new InputFileException(Problems.MalformedJson, LineAt(reader.TokenStartIndex), "expected an object or array of records");
                        _rootSeen = true;
                        _rootIsArray = reader.TokenType == JsonTokenType.StartArray;
                        (safeConsumed, safeState) = (reader.BytesConsumed, reader.CurrentState);
                        continue;
                    }
                    if (reader.CurrentDepth == 0) { _done = true; return output.Count > 0; } // end of the root
                    if (!_rootIsArray)
                    {
                        if (reader.TokenType != JsonTokenType.PropertyName)
                            throw new InputFileException(Problems.MalformedJson, LineAt(reader.TokenStartIndex), "expected a record key");
                        if (!reader.Read()) break;
                    }
                    long recStart = reader.TokenStartIndex;
                    bool isObject = reader.TokenType == JsonTokenType.StartObject;
                    if (!reader.TrySkip()) break;
                    long recEnd = reader.BytesConsumed;
                    long line = LineAt(recStart);
                    if (!isObject) output.Add(SourceRecord.Bad(line, Problems.FieldNotText));
                    else
                    {
                        if (recEnd - recStart > maxRecordBytes) output.Add(SourceRecord.Bad(line, Problems.TooLarge));
                        else
                        {
                            var (text, problem) = JsonFields.Extract(_buf.AsSpan(_start + (int)recStart, (int)(recEnd - recStart)), source.TextFields, source.Joiner);
                            output.Add(problem is null ? SourceRecord.Ok(line, text!) : SourceRecord.Bad(line, problem));
                        }
                    }
                    (safeConsumed, safeState) = (reader.BytesConsumed, reader.CurrentState);
                }
            }
            catch (JsonException e)
            {
                // Hand out the records parsed before the error first; the next call reports it.
                _pending = new InputFileException(Problems.MalformedJson, _lineAtCounted + (e.LineNumber ?? 0), "malformed JSON", e);
                return true;
            }
            // Out of data: keep the unfinished part and read more.
            if (_eof)
                throw new InputFileException(Problems.MalformedJson, LineAt(safeConsumed), _rootSeen ? "JSON ends before its last record is complete (truncated?)" : "empty file");
            LineAt(safeConsumed); // count the newlines of the bytes about to be dropped
            _start += (int)safeConsumed;
            _absStart += safeConsumed;
            _state = safeState;
            if (_end - _start >= maxRecordBytes + 1024)
                throw new InputFileException(Problems.TooLarge, LineAt(0), $"a record exceeds {maxRecordBytes} bytes");
            Fill();
            return true;
        }

        long LineAt(long offsetInWindow)
        {
            long abs = _absStart + offsetInWindow;
            if (abs > _countedTo)
            {
                int from = (int)(_countedTo - _absStart), to = (int)offsetInWindow;
                if (from >= 0) _lineAtCounted += _buf.AsSpan(_start + from, to - from).Count((byte)'\n');
                _countedTo = abs;
            }
            return _lineAtCounted;
        }

        void Fill()
        {
            if (_start > 0)
            {
                Buffer.BlockCopy(_buf, _start, _buf, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }
            if (_end == _buf.Length) Array.Resize(ref _buf, _buf.Length * 2);
            int n = stream.Read(_buf, _end, _buf.Length - _end);
            if (n == 0) _eof = true;
            _end += n;
        }
    }
}
