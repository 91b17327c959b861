namespace MeLlama.Evaluation.Metrics;

/// <summary>
/// Porter (1980) suffix stripper with the departures NLTK makes in its default NLTK_EXTENSIONS mode,
/// because Google's rouge-score package stems with <c>nltk.stem.porter.PorterStemmer()</c> and our ROUGE
/// numbers must be comparable with published ones. Input is expected lower-case ASCII (the ROUGE
/// tokenizer guarantees it). Stateless and thread-safe.
/// </summary>
public static class PorterStemmer
{
    // NLTK_EXTENSIONS: irregular forms that bypass the algorithm.
    static readonly Dictionary<string, string> Irregular = new(StringComparer.Ordinal)
    {
        ["sky"] = "sky", ["skies"] = "sky", ["dying"] = "die", ["lying"] = "lie", ["tying"] = "tie",
        ["news"] = "news", ["innings"] = "inning", ["inning"] = "inning", ["outings"] = "outing",
        ["outing"] = "outing", ["cannings"] = "canning", ["canning"] = "canning", ["howe"] = "howe",
        ["proceed"] = "proceed", ["exceed"] = "exceed", ["succeed"] = "succeed",
    };

    public static string Stem(string word)
    {
        if (Irregular.TryGetValue(word, out var irregular)) return irregular;
        if (word.Length <= 2) return word;
        string w = Step1a(word);
        w = Step1b(w);
        w = Step1c(w);
        w = Step2(w);
        w = Step3(w);
        w = Step4(w);
        w = Step5a(w);
        return Step5b(w);
    }

    static bool IsConsonant(string w, int i)
    {
        char c = w[i];
        if (c is 'a' or 'e' or 'i' or 'o' or 'u') return false;
        if (c == 'y') return i == 0 || !IsConsonant(w, i - 1);
        return true;
    }

    /// <summary>m in [C](VC){m}[V]: the number of vowel→consonant transitions.</summary>
    static int Measure(string stem)
    {
        int m = 0;
        for (int i = 1; i < stem.Length; i++)
            if (!IsConsonant(stem, i - 1) && IsConsonant(stem, i)) m++;
        return m;
    }

    static bool ContainsVowel(string stem)
    {
        for (int i = 0; i < stem.Length; i++) if (!IsConsonant(stem, i)) return true;
        return false;
    }

    static bool EndsDoubleConsonant(string w) =>
        w.Length >= 2 && w[^1] == w[^2] && IsConsonant(w, w.Length - 1);

    /// <summary>*o: ends consonant-vowel-consonant, last not w/x/y; NLTK also accepts a two-letter vowel-consonant word.</summary>
    static bool EndsCvc(string w) =>
        (w.Length >= 3 && IsConsonant(w, w.Length - 3) && !IsConsonant(w, w.Length - 2) && IsConsonant(w, w.Length - 1)
         && w[^1] is not ('w' or 'x' or 'y'))
        || (w.Length == 2 && !IsConsonant(w, 0) && IsConsonant(w, 1));

    /// <summary>
    /// The first rule whose suffix matches decides: if its condition holds the suffix is replaced,
    /// otherwise the word is returned unchanged (later rules are not tried), as in the paper.
    /// </summary>
    static string ApplyFirst(string w, (string Suffix, string Replacement, Func<string, bool>? Condition)[] rules)
    {
        foreach (var (suffix, replacement, condition) in rules)
        {
            if (!w.EndsWith(suffix, StringComparison.Ordinal)) continue;
            string stem = w[..^suffix.Length];
            return condition == null || condition(stem) ? stem + replacement : w;
        }
        return w;
    }

    static bool PositiveMeasure(string stem) => Measure(stem) > 0;
    static bool MeasureAboveOne(string stem) => Measure(stem) > 1;

    static string Step1a(string w)
    {
        if (w.Length == 4 && w.EndsWith("ies", StringComparison.Ordinal)) return w[..^3] + "ie"; // NLTK: dies -> die
        return ApplyFirst(w, [("sses", "ss", null), ("ies", "i", null), ("ss", "ss", null), ("s", "", null)]);
    }

    static string Step1b(string w)
    {
        if (w.EndsWith("ied", StringComparison.Ordinal)) return w[..^3] + (w.Length == 4 ? "ie" : "i"); // NLTK
        if (w.EndsWith("eed", StringComparison.Ordinal))
        {
            string s = w[..^3];
            return Measure(s) > 0 ? s + "ee" : w;
        }
        string? stem = null;
        foreach (var suffix in new[] { "ed", "ing" })
            if (w.EndsWith(suffix, StringComparison.Ordinal) && ContainsVowel(w[..^suffix.Length])) { stem = w[..^suffix.Length]; break; }
        if (stem == null) return w;

        if (stem.EndsWith("at", StringComparison.Ordinal) || stem.EndsWith("bl", StringComparison.Ordinal) || stem.EndsWith("iz", StringComparison.Ordinal))
            return stem + "e";
        if (EndsDoubleConsonant(stem))
            return stem[^1] is 'l' or 's' or 'z' ? stem : stem[..^1];
        return Measure(stem) == 1 && EndsCvc(stem) ? stem + "e" : stem;
    }

    // NLTK: y -> i only when preceded by a consonant that is not the whole stem.
    static string Step1c(string w) =>
        ApplyFirst(w, [("y", "i", stem => stem.Length > 1 && IsConsonant(stem, stem.Length - 1))]);

    static string Step2(string w)
    {
        // NLTK applies ALLI -> AL first and re-runs step 2 on the result.
        if (w.EndsWith("alli", StringComparison.Ordinal) && PositiveMeasure(w[..^4]))
            return Step2(w[..^4] + "al");
        string word = w;
        return ApplyFirst(w,
        [
            ("ational", "ate", PositiveMeasure), ("tional", "tion", PositiveMeasure), ("enci", "ence", PositiveMeasure),
            ("anci", "ance", PositiveMeasure), ("izer", "ize", PositiveMeasure), ("bli", "ble", PositiveMeasure),
            ("alli", "al", PositiveMeasure), ("entli", "ent", PositiveMeasure), ("eli", "e", PositiveMeasure),
            ("ousli", "ous", PositiveMeasure), ("ization", "ize", PositiveMeasure), ("ation", "ate", PositiveMeasure),
            ("ator", "ate", PositiveMeasure), ("alism", "al", PositiveMeasure), ("iveness", "ive", PositiveMeasure),
            ("fulness", "ful", PositiveMeasure), ("ousness", "ous", PositiveMeasure), ("aliti", "al", PositiveMeasure),
            ("iviti", "ive", PositiveMeasure), ("biliti", "ble", PositiveMeasure), ("fulli", "ful", PositiveMeasure),
            // The 'l' of 'logi' stays with the stem for the measure (geo-, theo- behave like philo-).
            ("logi", "log", _ => PositiveMeasure(word[..^3])),
        ]);
    }

    static string Step3(string w) => ApplyFirst(w,
    [
        ("icate", "ic", PositiveMeasure), ("ative", "", PositiveMeasure), ("alize", "al", PositiveMeasure),
        ("iciti", "ic", PositiveMeasure), ("ical", "ic", PositiveMeasure), ("ful", "", PositiveMeasure),
        ("ness", "", PositiveMeasure),
    ]);

    static string Step4(string w) => ApplyFirst(w,
    [
        ("al", "", MeasureAboveOne), ("ance", "", MeasureAboveOne), ("ence", "", MeasureAboveOne), ("er", "", MeasureAboveOne),
        ("ic", "", MeasureAboveOne), ("able", "", MeasureAboveOne), ("ible", "", MeasureAboveOne), ("ant", "", MeasureAboveOne),
        ("ement", "", MeasureAboveOne), ("ment", "", MeasureAboveOne), ("ent", "", MeasureAboveOne),
        ("ion", "", s => Measure(s) > 1 && s.Length > 0 && s[^1] is 's' or 't'),
        ("ou", "", MeasureAboveOne), ("ism", "", MeasureAboveOne), ("ate", "", MeasureAboveOne), ("iti", "", MeasureAboveOne),
        ("ous", "", MeasureAboveOne), ("ive", "", MeasureAboveOne), ("ize", "", MeasureAboveOne),
    ]);

    static string Step5a(string w)
    {
        if (!w.EndsWith('e')) return w;
        string stem = w[..^1];
        int m = Measure(stem);
        return m > 1 || (m == 1 && !EndsCvc(stem)) ? stem : w;
    }

    static string Step5b(string w) =>
        w.EndsWith("ll", StringComparison.Ordinal) && Measure(w[..^1]) > 1 ? w[..^1] : w;
}
