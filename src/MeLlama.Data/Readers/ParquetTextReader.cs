using System.Text;
using System.Text.Unicode;
using MeLlama.Data.Config;
using Parquet;
using Parquet.Schema;

namespace MeLlama.Data.Readers;

/// <summary>
/// Parquet (e.g. RedPajama, PubMed dumps): the configured string column(s), read row group by row group with
/// Parquet.Net, so memory holds one row group's text column at a time. Values are read as raw bytes and checked
/// for valid UTF-8 ourselves (the library would silently substitute). The "line" of a record is its 1-based row.
/// Needs a seekable file (Parquet's footer is at the end): no .gz/.zst around Parquet (it compresses internally).
/// </summary>
sealed class ParquetTextReader(SourceConfig source) : IRecordReader
{
    public IEnumerable<SourceRecord> Read(Stream content, string path)
    {
        if (!content.CanSeek) throw new InputFileException(Problems.MalformedParquet, 0, "Parquet input must be an uncompressed, seekable file (do not wrap it in .gz/.zst)");
        ParquetReader reader;
        try { reader = ParquetReader.CreateAsync(content, leaveStreamOpen: true).GetAwaiter().GetResult(); }
        catch (Exception e) when (e is not InputFileException)
        {
            throw new InputFileException(Problems.MalformedParquet, 0, $"not a readable Parquet file ({e.GetType().Name})", e);
        }
        try
        {
            var dataFields = reader.Schema.GetDataFields();
            var fields = new DataField[source.TextFields.Count];
            for (int i = 0; i < fields.Length; i++)
            {
                fields[i] = dataFields.FirstOrDefault(f => f.Name == source.TextFields[i] || f.Path.ToString() == source.TextFields[i])
                    ?? throw new InputFileException(Problems.MissingColumn, 0, $"column '{source.TextFields[i]}' is not in the Parquet schema ({dataFields.Length} columns)");
                if (fields[i].ClrType != typeof(string) && fields[i].ClrType != typeof(byte[]) && fields[i].ClrType != typeof(ReadOnlyMemory<byte>) && fields[i].ClrType != typeof(ReadOnlyMemory<char>))
                    throw new InputFileException(Problems.MissingColumn, 0, $"column '{source.TextFields[i]}' is {fields[i].ClrType.Name}, not text");
            }
            long row = 0;
            for (int g = 0; g < reader.RowGroupCount; g++)
            {
                var columns = ReadRowGroup(reader, g, fields, row);
                int rows = columns[0].Length;
                for (int r = 0; r < rows; r++)
                {
                    row++;
                    string? problem = null;
                    var parts = new string[fields.Length];
                    for (int f = 0; f < fields.Length; f++)
                    {
                        switch (columns[f][r])
                        {
                            case string text: parts[f] = text; break;
                            case byte[] bytes when !Utf8.IsValid(bytes): problem = Problems.InvalidUtf8; break;
                            case byte[] bytes: parts[f] = Encoding.UTF8.GetString(bytes); break;
                            default: parts[f] = ""; break; // null
                        }
                        if (problem != null) break;
                    }
                    yield return problem != null ? SourceRecord.Bad(row, problem)
                        : SourceRecord.Ok(row, parts.Length == 1 ? parts[0] : string.Join(source.Joiner, parts.Where(p => p.Length > 0)));
                }
            }
        }
        finally { reader.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
    }

    /// <summary>
    /// One row group's text columns. UTF8-annotated (string) columns are decoded by Parquet.Net, which writers
    /// such as Arrow validate on write; plain BYTE_ARRAY columns are read raw and checked here.
    /// </summary>
    static object?[][] ReadRowGroup(ParquetReader reader, int group, DataField[] fields, long rowsBefore)
    {
        try
        {
            using var rg = reader.OpenRowGroupReader(group);
            int rows = checked((int)rg.RowCount);
            var result = new object?[fields.Length][];
            for (int f = 0; f < fields.Length; f++)
            {
                if (fields[f].ClrType == typeof(string) || fields[f].ClrType == typeof(ReadOnlyMemory<char>))
                {
                    var values = new string?[rows];
                    rg.ReadAsync(fields[f], values.AsMemory(), null).GetAwaiter().GetResult();
                    result[f] = values;
                }
                else
                {
                    var values = new byte[]?[rows];
                    rg.ReadAsync(fields[f], values.AsMemory(), null).GetAwaiter().GetResult();
                    result[f] = values;
                }
            }
            return result;
        }
        catch (Exception e) when (e is not InputFileException)
        {
            throw new InputFileException(Problems.MalformedParquet, rowsBefore + 1, $"row group {group} cannot be read ({e.GetType().Name})", e);
        }
    }
}
