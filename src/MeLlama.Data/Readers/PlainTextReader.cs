using System.Text;
using System.Text.Unicode;
using MeLlama.Data.Config;

namespace MeLlama.Data.Readers;

/// <summary>
/// Plain UTF-8 text: one document per file (textMode "file", e.g. a folder of PMC articles), per blank-line
/// separated paragraph ("paragraph") or per line ("line").
/// </summary>
sealed class PlainTextReader(SourceConfig source, int maxRecordBytes) : IRecordReader
{
    public IEnumerable<SourceRecord> Read(Stream content, string path)
    {
        var lines = new ByteLines(content, maxRecordBytes).Read();
        if (source.TextMode == "line")
        {
            foreach (var l in lines)
            {
                if (l.TooLong) { yield return SourceRecord.Bad(l.Number, Problems.TooLarge); continue; }
                if (l.Bytes.IsEmpty) continue;
                yield return Decode(l.Number, l.Bytes.Span);
            }
            yield break;
        }
        // "file" and "paragraph": accumulate lines; "file" only flushes at the end.
        var doc = new MemoryStream();
        long docLine = 0;
        bool tooLarge = false, anyText = false;
        foreach (var l in lines)
        {
            bool blank = l.Bytes.Span.Trim((byte)' ').Trim((byte)'\t').IsEmpty && !l.TooLong;
            if (source.TextMode == "paragraph" && blank)
            {
                if (anyText) yield return Flush(doc, docLine, tooLarge);
                doc.SetLength(0);
                tooLarge = anyText = false;
                continue;
            }
            if (!anyText && !blank) { docLine = docLine == 0 || source.TextMode == "paragraph" ? l.Number : docLine; anyText = true; }
            if (docLine == 0) docLine = l.Number;
            if (l.TooLong || doc.Length + l.Bytes.Length + 1 > maxRecordBytes) { tooLarge = true; continue; }
            if (doc.Length > 0) doc.WriteByte((byte)'\n');
            doc.Write(l.Bytes.Span);
        }
        if (anyText) yield return Flush(doc, docLine, tooLarge);
    }

    static SourceRecord Flush(MemoryStream doc, long line, bool tooLarge) =>
        tooLarge ? SourceRecord.Bad(line, Problems.TooLarge) : Decode(line, doc.GetBuffer().AsSpan(0, (int)doc.Length));

    static SourceRecord Decode(long line, ReadOnlySpan<byte> bytes)
    {
        if (line == 1 && bytes.StartsWith("\uFEFF"u8)) bytes = bytes[3..];
        return Utf8.IsValid(bytes) ? SourceRecord.Ok(line, Encoding.UTF8.GetString(bytes)) : SourceRecord.Bad(line, Problems.InvalidUtf8);
    }
}
