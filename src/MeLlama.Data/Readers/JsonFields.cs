using System.Text;
using System.Text.Json;
using System.Text.Unicode;

namespace MeLlama.Data.Readers;

/// <summary>Pulls the configured text field(s) out of one JSON object held in memory.</summary>
static class JsonFields
{
    /// <summary>Document text from <paramref name="json"/> (one complete object), or a problem category.</summary>
    public static (string? Text, string? Problem) Extract(ReadOnlySpan<byte> json, IReadOnlyList<string> fields, string joiner)
    {
        if (!Utf8.IsValid(json)) return (null, Problems.InvalidUtf8);
        var values = new string?[fields.Count];
        var found = new bool[fields.Count];
        try
        {
            var reader = new Utf8JsonReader(json, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Skip });
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject) return (null, Problems.MalformedJson);
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                int f = IndexOf(fields, ref reader);
                if (!reader.Read()) return (null, Problems.MalformedJson);
                if (f < 0 || found[f]) { reader.Skip(); continue; }
                found[f] = true;
                switch (reader.TokenType)
                {
                    case JsonTokenType.String: values[f] = reader.GetString(); break;
                    case JsonTokenType.Null: values[f] = ""; break;
                    case JsonTokenType.StartArray:
                        var parts = new List<string>();
                        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                        {
                            if (reader.TokenType == JsonTokenType.String) parts.Add(reader.GetString()!);
                            else if (reader.TokenType != JsonTokenType.Null) return (null, Problems.FieldNotText);
                        }
                        values[f] = string.Join(joiner, parts);
                        break;
                    case JsonTokenType.Number or JsonTokenType.True or JsonTokenType.False:
                        values[f] = Encoding.UTF8.GetString(reader.ValueSpan);
                        break;
                    default: return (null, Problems.FieldNotText);
                }
            }
            if (reader.TokenType != JsonTokenType.EndObject) return (null, Problems.MalformedJson);
            if (reader.Read()) return (null, Problems.MalformedJson); // trailing content after the object
        }
        catch (JsonException) { return (null, Problems.MalformedJson); }
        catch (InvalidOperationException) { return (null, Problems.MalformedJson); }
        for (int f = 0; f < fields.Count; f++) if (!found[f]) return (null, Problems.MissingField);
        return (values.Length == 1 ? values[0] : string.Join(joiner, values.Where(v => !string.IsNullOrEmpty(v))), null);
    }

    static int IndexOf(IReadOnlyList<string> fields, ref Utf8JsonReader reader)
    {
        for (int i = 0; i < fields.Count; i++) if (reader.ValueTextEquals(fields[i])) return i;
        return -1;
    }
}
