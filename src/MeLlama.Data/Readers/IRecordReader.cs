using MeLlama.Data.Config;

namespace MeLlama.Data.Readers;

/// <summary>
/// Reads the records of one decompressed input stream. Record-level problems are yielded as
/// <see cref="SourceRecord.Bad"/>; problems that make the rest of the file unreadable throw
/// <see cref="InputFileException"/>. Implementations hold at most one record (or one Parquet row group) in memory.
/// </summary>
public interface IRecordReader
{
    IEnumerable<SourceRecord> Read(Stream content, string path);
}

public static class RecordReaders
{
    public static IRecordReader For(SourceConfig source, int maxRecordBytes) => source.Format switch
    {
        "jsonl" => new JsonLinesReader(source, maxRecordBytes),
        "json-records" => new JsonRecordsReader(source, maxRecordBytes),
        "csv" => new CsvRecordReader(source, maxRecordBytes),
        "text" => new PlainTextReader(source, maxRecordBytes),
        "parquet" => new ParquetTextReader(source),
        _ => throw new DataConfigException($"source '{source.Name}': unknown format '{source.Format}'"),
    };
}
