using System.Text.Json;
using MeLlama.TestSupport;

namespace MeLlama.Tokenization.Tests;

/// <summary>Real texts from ../shared for the tests (skips when absent).</summary>
internal static class TestCorpora
{
    public sealed record GoldenLine(int Line, string Text, int[] Ids);

    public static List<GoldenLine> Golden()
    {
        var path = SharedData.Require(SharedData.TokenizerGolden);
        var lines = new List<GoldenLine>();
        int n = 0;
        foreach (var line in File.ReadLines(path))
        {
            n++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            using var doc = JsonDocument.Parse(line);
            var text = doc.RootElement.GetProperty("text").GetString()!;
            var ids = doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            lines.Add(new GoldenLine(n, text, ids));
        }
        return lines;
    }

    /// <summary>PubMedQA abstracts: each record's CONTEXTS joined by a space.</summary>
    public static List<string> PubMedQaAbstracts(int max = int.MaxValue)
    {
        var path = SharedData.Require(SharedData.PubMedQa);
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        var texts = new List<string>();
        foreach (var record in doc.RootElement.EnumerateObject())
        {
            if (texts.Count >= max) break;
            texts.Add(string.Join(" ", record.Value.GetProperty("CONTEXTS").EnumerateArray().Select(c => c.GetString())));
        }
        return texts;
    }

    static LlamaSentencePieceTokenizer? _llama;
    static readonly Lock Gate = new();

    /// <summary>One shared instance (loading takes a moment; the tokenizer is immutable and thread-safe).</summary>
    public static LlamaSentencePieceTokenizer Llama()
    {
        var path = SharedData.Require(SharedData.LlamaTokenizer);
        lock (Gate) return _llama ??= LlamaSentencePieceTokenizer.FromFile(path);
    }
}
