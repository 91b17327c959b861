using System.Text;

namespace MeLlama.Inference.ChatTemplates;

/// <summary>Helpers to emit Jinja chat templates.</summary>
static class JinjaText
{
    /// <summary>A single-quoted Jinja string literal holding exactly <paramref name="text"/>.</summary>
    public static string Literal(string text)
    {
        var sb = new StringBuilder(text.Length + 2).Append('\'');
        foreach (char c in text)
        {
            switch (c)
            {
                case '\\': sb.Append(@"\\"); break;
                case '\'': sb.Append(@"\'"); break;
                case '\n': sb.Append(@"\n"); break;
                case '\r': sb.Append(@"\r"); break;
                case '\t': sb.Append(@"\t"); break;
                default: sb.Append(c); break;
            }
        }
        return sb.Append('\'').ToString();
    }
}
