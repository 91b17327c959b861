using System.Text;
using System.Text.Unicode;
using MeLlama.Data.Config;

namespace MeLlama.Data.Readers;

/// <summary>
/// Streaming RFC 4180 CSV (MIMIC-III NOTEEVENTS.csv, MIMIC-IV-Note discharge.csv/radiology.csv, ACI-Bench,
/// MTS-Dialog): comma-separated, fields optionally quoted with ", "" inside quotes is a literal quote, quoted
/// fields may hold commas and line breaks, records end with LF or CRLF. The first record is the header and the
/// configured column(s) are looked up by name. Parsed on bytes (all delimiters are ASCII, so UTF-8 is safe to
/// split), with only the current record in memory; only the wanted columns are decoded.
/// A record with the wrong number of fields, or text after a closing quote, is a record-level problem; a quote
/// left open at the end of the file ends the file.
/// </summary>
sealed class CsvRecordReader(SourceConfig source, int maxRecordBytes) : IRecordReader
{
    public IEnumerable<SourceRecord> Read(Stream content, string path)
    {
        var parser = new CsvParser(content, maxRecordBytes);
        if (!parser.Next()) throw new InputFileException(Problems.MissingColumn, 1, "empty CSV file (no header)");
        var header = Enumerable.Range(0, parser.FieldCount).Select(i => Encoding.UTF8.GetString(parser.Field(i))).ToList();
        if (header.Count > 0 && header[0].StartsWith('\uFEFF')) header[0] = header[0][1..];
        var columns = new int[source.TextFields.Count];
        for (int i = 0; i < columns.Length; i++)
        {
            columns[i] = header.IndexOf(source.TextFields[i]);
            if (columns[i] < 0) throw new InputFileException(Problems.MissingColumn, 1, $"column '{source.TextFields[i]}' is not in the header ({header.Count} columns)");
        }
        var parts = new string[columns.Length];
        while (parser.Next())
        {
            long line = parser.RecordLine;
            if (parser.Problem is { } p) { yield return SourceRecord.Bad(line, p); continue; }
            if (parser.FieldCount == 1 && parser.Field(0).IsEmpty) continue; // blank line
            if (parser.FieldCount != header.Count) { yield return SourceRecord.Bad(line, Problems.MalformedCsv); continue; }
            string? problem = null;
            for (int i = 0; i < columns.Length; i++)
            {
                var bytes = parser.Field(columns[i]);
                if (!Utf8.IsValid(bytes)) { problem = Problems.InvalidUtf8; break; }
                parts[i] = Encoding.UTF8.GetString(bytes);
            }
            if (problem != null) { yield return SourceRecord.Bad(line, problem); continue; }
            yield return SourceRecord.Ok(line, parts.Length == 1 ? parts[0] : string.Join(source.Joiner, parts.Where(x => x.Length > 0)));
        }
    }
}

/// <summary>The byte-level RFC 4180 state machine behind <see cref="CsvRecordReader"/>.</summary>
sealed class CsvParser(Stream stream, int maxRecordBytes)
{
    byte[] _buf = new byte[1 << 16];
    int _pos, _end;
    bool _eof;
    long _line = 1;
    // Current record: unescaped field bytes back to back in _out, with their bounds.
    byte[] _out = new byte[1 << 16];
    int _outLen;
    readonly List<(int Start, int Length)> _fields = [];

    public long RecordLine { get; private set; }
    public string? Problem { get; private set; }
    public int FieldCount => _fields.Count;
    public ReadOnlySpan<byte> Field(int i) => _out.AsSpan(_fields[i].Start, _fields[i].Length);

    /// <summary>Parses the next record; false at end of input.</summary>
    public bool Next()
    {
        _fields.Clear();
        _outLen = 0;
        Problem = null;
        RecordLine = _line;
        if (!Available()) return false;
        bool tooLarge = false;
        while (true)
        {
            // One field.
            int fieldStart = _outLen;
            if (Available() && _buf[_pos] == '"')
            {
                _pos++;
                long quoteLine = _line;
                while (true)
                {
                    if (!Available())
                        throw new InputFileException(Problems.MalformedCsv, quoteLine, "quoted field is never closed (truncated file or stray quote)");
                    byte b = _buf[_pos++];
                    if (b == '"')
                    {
                        if (Available() && _buf[_pos] == '"') { _pos++; Append(b, ref tooLarge); continue; }
                        break;
                    }
                    if (b == '\n') _line++;
                    Append(b, ref tooLarge);
                }
                // After a closing quote only a delimiter or the end of the record may follow.
                if (Available() && _buf[_pos] is not ((byte)',' or (byte)'\n' or (byte)'\r'))
                {
                    Problem ??= Problems.MalformedCsv;
                    while (Available() && _buf[_pos] is not ((byte)',' or (byte)'\n')) _pos++;
                }
            }
            else
            {
                while (Available())
                {
                    byte b = _buf[_pos];
                    if (b == ',' || b == '\n') break;
                    if (b == '\r' && (PeekNext() is (byte)'\n' or null)) break;
                    Append(b, ref tooLarge);
                    _pos++;
                }
            }
            _fields.Add((fieldStart, _outLen - fieldStart));
            if (!Available()) break;
            byte d = _buf[_pos++];
            if (d == ',') continue;
            if (d == '\r' && Available() && _buf[_pos] == '\n') _pos++;
            _line++;
            break;
        }
        if (tooLarge) Problem = Problems.TooLarge;
        return true;
    }

    void Append(byte b, ref bool tooLarge)
    {
        if (_outLen >= maxRecordBytes) { tooLarge = true; return; }
        if (_outLen == _out.Length) Array.Resize(ref _out, _out.Length * 2);
        _out[_outLen++] = b;
    }

    int? PeekNext()
    {
        if (_pos + 1 < _end) return _buf[_pos + 1];
        // Refill keeping the current byte.
        if (!_eof)
        {
            Buffer.BlockCopy(_buf, _pos, _buf, 0, _end - _pos);
            _end -= _pos;
            _pos = 0;
            int n = stream.Read(_buf, _end, _buf.Length - _end);
            if (n == 0) _eof = true;
            _end += n;
            if (_pos + 1 < _end) return _buf[_pos + 1];
        }
        return null;
    }

    bool Available()
    {
        if (_pos < _end) return true;
        if (_eof) return false;
        _pos = 0;
        _end = stream.Read(_buf, 0, _buf.Length);
        if (_end == 0) { _eof = true; return false; }
        return true;
    }
}
