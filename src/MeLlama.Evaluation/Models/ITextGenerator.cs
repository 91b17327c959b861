namespace MeLlama.Evaluation.Models;

/// <summary>Greedy completion of <paramref name="Prompt"/>: at most MaxNewTokens tokens, cut before the first stop sequence.</summary>
public sealed record GenerationRequest(string Prompt, int MaxNewTokens, IReadOnlyList<string> StopSequences);

/// <summary>What generation-mode evaluation needs from a model (prompt → completion text, without the prompt).</summary>
public interface ITextGenerator
{
    string Fingerprint { get; }
    IReadOnlyList<string> Generate(IReadOnlyList<GenerationRequest> requests);
}

/// <summary>Stop-sequence handling shared by generators.</summary>
public static class StopSequences
{
    /// <summary>Text before the earliest stop sequence (all of it when none occurs).</summary>
    public static string Cut(string text, IReadOnlyList<string> stops)
    {
        int cut = text.Length;
        foreach (var s in stops)
        {
            if (s.Length == 0) continue;
            int i = text.IndexOf(s, StringComparison.Ordinal);
            if (i >= 0 && i < cut) cut = i;
        }
        return text[..cut];
    }
}
