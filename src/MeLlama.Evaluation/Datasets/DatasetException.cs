namespace MeLlama.Evaluation.Datasets;

/// <summary>
/// A dataset file is missing or malformed. The message names the file, the record (line number or id)
/// and the field, and says what was expected; it never quotes record contents (they may be clinical text).
/// </summary>
public sealed class DatasetException(string message, Exception? inner = null) : Exception(message, inner)
{
    public static DatasetException Missing(string task, string path, string expected, string? obtain) =>
        new($"Task '{task}': data file not found: {path}. Expected {expected}." + (obtain is null ? "" : " " + obtain));

    public static DatasetException Field(string path, string where, string field, string expected) =>
        new($"{path}, {where}: field '{field}' {expected}");
}
