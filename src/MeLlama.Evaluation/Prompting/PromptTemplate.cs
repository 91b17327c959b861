using System.Text;

namespace MeLlama.Evaluation.Prompting;

/// <summary>
/// Fills "{name}" placeholders from a field map; "{{" and "}}" are literal braces. An unknown name is an
/// error (a typo in a task file must not silently produce an empty prompt).
/// </summary>
public static class PromptTemplate
{
    public static string Fill(string template, IReadOnlyDictionary<string, string> fields, string templateName = "template")
    {
        var sb = new StringBuilder(template.Length * 2);
        for (int i = 0; i < template.Length; i++)
        {
            char c = template[i];
            if (c == '{' && i + 1 < template.Length && template[i + 1] == '{') { sb.Append('{'); i++; continue; }
            if (c == '}' && i + 1 < template.Length && template[i + 1] == '}') { sb.Append('}'); i++; continue; }
            if (c != '{') { sb.Append(c); continue; }
            int close = template.IndexOf('}', i + 1);
            if (close < 0) throw new FormatException($"{templateName}: unclosed '{{' at position {i}");
            string name = template[(i + 1)..close];
            if (!fields.TryGetValue(name, out var value))
                throw new FormatException($"{templateName}: unknown placeholder {{{name}}} (available: {string.Join(", ", fields.Keys.Order())})");
            sb.Append(value);
            i = close;
        }
        return sb.ToString();
    }
}
