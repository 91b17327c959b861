using MeLlama.Data.Config;

namespace MeLlama.Data.Readers;

/// <summary>JSON Lines: one object per line; blank lines are ignored; a bad line is a record-level problem.</summary>
sealed class JsonLinesReader(SourceConfig source, int maxRecordBytes) : IRecordReader
{
    public IEnumerable<SourceRecord> Read(Stream content, string path)
    {
        foreach (var line in new ByteLines(content, maxRecordBytes).Read())
        {
            if (line.TooLong) { yield return SourceRecord.Bad(line.Number, Problems.TooLarge); continue; }
            var span = line.Bytes.Span;
            if (span.Trim((byte)' ').Trim((byte)'\t').IsEmpty) continue;
            var (text, problem) = JsonFields.Extract(span, source.TextFields, source.Joiner);
            yield return problem is null ? SourceRecord.Ok(line.Number, text!) : SourceRecord.Bad(line.Number, problem);
        }
    }
}
