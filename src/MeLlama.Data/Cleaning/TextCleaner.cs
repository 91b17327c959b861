using System.Globalization;
using System.Text;

namespace MeLlama.Data.Cleaning;

/// <summary>
/// Document clean-up before tokenization: Unicode normalisation (NFC by default: NFKC would fold "10⁹/L" to
/// "109/L" and "m²" to "m2", changing biomedical meaning), line-ending unification, removal of control
/// characters, and whitespace collapse (runs of horizontal space → one space, no spaces at line ends, at most one
/// blank line in a row, trimmed). Paragraph structure is kept. Stateless and thread-safe.
/// </summary>
public sealed class TextCleaner
{
    readonly IcuNormalizer? _normalizer;

    public TextCleaner(string normalization)
    {
        Normalization = normalization.ToUpperInvariant() switch
        {
            "NFC" => "NFC",
            "NFKC" => "NFKC",
            "NONE" => "none",
            _ => throw new ArgumentException($"normalization must be NFC, NFKC or none, not '{normalization}'", nameof(normalization)),
        };
        if (Normalization != "none")
            _normalizer = IcuNormalizer.Create(Normalization == "NFKC" ? NormalizationForm.FormKC : NormalizationForm.FormC);
    }

    /// <summary>"NFC", "NFKC" or "none", plus the ICU version that did it (recorded in manifests).</summary>
    public string Normalization { get; }
    public string Description => _normalizer is null ? "none" : $"{Normalization} (ICU {_normalizer.IcuVersion}), whitespace collapsed";

    public string Clean(string text)
    {
        if (_normalizer != null) text = _normalizer.Normalize(text);
        return CollapseWhitespace(text);
    }

    public static string CollapseWhitespace(string text)
    {
        var sb = new StringBuilder(text.Length);
        int pendingNewlines = 0;
        bool pendingSpace = false;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (c == '\r')
            {
                if (i + 1 < text.Length && text[i + 1] == '\n') i++;
                c = '\n';
            }
            if (c == '\n' || c == '\u2028' || c == '\u2029' || c == '\u0085' || c == '\f' || c == '\v')
            {
                pendingNewlines++;
                pendingSpace = false; // trailing spaces of a line are dropped
                continue;
            }
            if (c == '\t' || c == '\u00A0' || (c > 127 && CharUnicodeInfo.GetUnicodeCategory(c) == UnicodeCategory.SpaceSeparator) || c == ' ')
            {
                pendingSpace = true;
                continue;
            }
            if (char.IsControl(c) || c == '\uFEFF') continue; // C0/C1 controls and stray BOMs carry no text
            if (sb.Length > 0)
            {
                if (pendingNewlines > 0) sb.Append('\n', Math.Min(pendingNewlines, 2));
                else if (pendingSpace) sb.Append(' ');
            }
            pendingNewlines = 0;
            pendingSpace = false;
            sb.Append(c);
        }
        return sb.ToString();
    }
}
