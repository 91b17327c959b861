using System.Text.Json;

namespace MeLlama.Evaluation.Datasets;

/// <summary>Typed access to a JSON record's fields with errors that name file, record and field.</summary>
internal readonly struct JsonFields(JsonElement record, string path, string where)
{
    public JsonElement Record => record;

    public string RequiredString(string field)
    {
        if (record.ValueKind != JsonValueKind.Object) throw DatasetException.Field(path, where, field, "is missing: the record is not a JSON object");
        if (!record.TryGetProperty(field, out var value)) throw DatasetException.Field(path, where, field, "is missing");
        return value.ValueKind switch
        {
            JsonValueKind.String => value.GetString()!,
            JsonValueKind.Number => value.GetRawText(),
            _ => throw DatasetException.Field(path, where, field, $"must be a string (found {value.ValueKind})"),
        };
    }

    public string? OptionalString(string field) =>
        record.ValueKind == JsonValueKind.Object && record.TryGetProperty(field, out var v) && v.ValueKind is JsonValueKind.String or JsonValueKind.Number
            ? (v.ValueKind == JsonValueKind.String ? v.GetString() : v.GetRawText())
            : null;

    public bool Has(string field) => record.ValueKind == JsonValueKind.Object && record.TryGetProperty(field, out var v) && v.ValueKind != JsonValueKind.Null;

    public JsonElement Required(string field, JsonValueKind kind, string description)
    {
        if (record.ValueKind != JsonValueKind.Object || !record.TryGetProperty(field, out var value))
            throw DatasetException.Field(path, where, field, $"is missing (expected {description})");
        if (value.ValueKind != kind) throw DatasetException.Field(path, where, field, $"must be {description} (found {value.ValueKind})");
        return value;
    }

    /// <summary>A string, or an array of strings joined by <paramref name="separator"/>.</summary>
    public string StringOrJoinedArray(string field, string separator)
    {
        if (record.ValueKind != JsonValueKind.Object || !record.TryGetProperty(field, out var value))
            throw DatasetException.Field(path, where, field, "is missing");
        if (value.ValueKind == JsonValueKind.String) return value.GetString()!;
        if (value.ValueKind != JsonValueKind.Array) throw DatasetException.Field(path, where, field, "must be a string or an array of strings");
        var parts = new List<string>();
        foreach (var e in value.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.String) throw DatasetException.Field(path, where, field, "must be an array of strings");
            parts.Add(e.GetString()!);
        }
        return string.Join(separator, parts);
    }
}

/// <summary>Reads JSON lines (or one JSON array) as (where, record) pairs; blank lines are skipped.</summary>
internal static class JsonRecords
{
    public static IEnumerable<(string Where, JsonElement Record)> Read(string path)
    {
        using var reader = new StreamReader(path);
        int first;
        while ((first = reader.Peek()) >= 0 && char.IsWhiteSpace((char)first)) reader.Read();
        if (first == '[')
        {
            JsonDocument doc;
            try { doc = JsonDocument.Parse(reader.ReadToEnd()); }
            catch (JsonException e) { throw new DatasetException($"{path}: not valid JSON ({e.Message})", e); }
            using (doc)
            {
                int i = 0;
                foreach (var record in doc.RootElement.EnumerateArray())
                    yield return ($"record {i++}", record.Clone());
            }
            yield break;
        }
        string? line;
        int lineNumber = 0;
        while ((line = reader.ReadLine()) != null)
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonElement record;
            try
            {
                using var doc = JsonDocument.Parse(line);
                record = doc.RootElement.Clone();
            }
            catch (JsonException e) { throw new DatasetException($"{path}, line {lineNumber}: not valid JSON ({e.Message})", e); }
            yield return ($"line {lineNumber}", record);
        }
    }
}
