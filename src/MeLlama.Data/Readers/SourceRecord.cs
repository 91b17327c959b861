namespace MeLlama.Data.Readers;

/// <summary>
/// One record read from an input file: the document text, or the reason it could not be used
/// (a problem category such as "malformed_json"; never the record's text). <see cref="Line"/> is the
/// 1-based line (or row) where the record starts.
/// </summary>
public readonly record struct SourceRecord(long Line, string? Text, string? Problem)
{
    public static SourceRecord Ok(long line, string text) => new(line, text, null);
    public static SourceRecord Bad(long line, string problem) => new(line, null, problem);
}

/// <summary>Problem categories (also the keys of "dropped" counts in manifests).</summary>
public static class Problems
{
    public const string MalformedJson = "malformed_json";
    public const string MalformedCsv = "malformed_csv";
    public const string InvalidUtf8 = "invalid_utf8";
    public const string MissingField = "missing_field";
    public const string FieldNotText = "field_not_text";
    public const string MissingColumn = "missing_column";
    public const string TooLarge = "too_large";
    public const string CorruptCompression = "corrupt_compressed_input";
    public const string UnreadableFile = "unreadable_file";
    public const string NoInputFiles = "no_input_files";
    public const string MalformedParquet = "malformed_parquet";
    public const string Empty = "empty";
    public const string TooShort = "too_short";
    public const string Duplicate = "duplicate";
}

/// <summary>A problem that ends the reading of a whole file (the records before it stay valid).</summary>
public sealed class InputFileException(string problem, long line, string detail, Exception? inner = null)
    : IOException(detail, inner)
{
    public string Problem { get; } = problem;
    public long Line { get; } = line;
}
