using System.Text.Json;
using System.Text.Json.Nodes;

namespace MeLlama.Tokenization;

/// <summary>Turns a tokenizer spec from a config or the command line into an <see cref="ITextTokenizer"/>.</summary>
public static class TokenizerLoader
{
    /// <summary>Written by <see cref="Gpt2BuiltinTokenizer.SaveHfFiles"/>: names the built-in tokenizer an HF folder uses.</summary>
    public const string BuiltinMarkerFile = "mellama_tokenizer.json";
    public const string SentencePieceModelFile = "tokenizer.model";

    /// <summary>
    /// <paramref name="spec"/> is "gpt2" (built-in demo tokenizer), the path of a SentencePiece
    /// <c>tokenizer.model</c>, or an HF model folder holding tokenizer.model or our built-in marker.
    /// </summary>
    public static ITextTokenizer Load(string spec)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(spec);
        if (string.Equals(spec, Gpt2BuiltinTokenizer.SpecName, StringComparison.OrdinalIgnoreCase))
            return new Gpt2BuiltinTokenizer();
        if (File.Exists(spec))
            return LlamaSentencePieceTokenizer.FromFile(spec);
        if (Directory.Exists(spec))
            return TryLoadFromModelFolder(spec)
                ?? throw new FileNotFoundException($"tokenizer folder '{spec}' has neither {SentencePieceModelFile} nor {BuiltinMarkerFile}");
        throw new FileNotFoundException($"tokenizer '{spec}' is not \"{Gpt2BuiltinTokenizer.SpecName}\", a tokenizer.model file or a model folder");
    }

    /// <summary>The tokenizer saved in an HF model folder, or null when the folder has no tokenizer at all.</summary>
    /// <exception cref="NotSupportedException">The folder has a tokenizer MeLlama cannot reproduce (e.g. only tokenizer.json).</exception>
    public static ITextTokenizer? TryLoadFromModelFolder(string hfDir)
    {
        string model = Path.Combine(hfDir, SentencePieceModelFile);
        if (File.Exists(model)) return LlamaSentencePieceTokenizer.FromFile(model);

        string marker = Path.Combine(hfDir, BuiltinMarkerFile);
        if (File.Exists(marker)) return LoadBuiltinMarker(marker);

        foreach (var other in new[] { "tokenizer.json", "vocab.json", "tokenizer_config.json" })
        {
            if (File.Exists(Path.Combine(hfDir, other)))
                throw new NotSupportedException($"'{hfDir}' has {other} but no {SentencePieceModelFile} or {BuiltinMarkerFile}; MeLlama reads SentencePiece tokenizer.model files and its built-in gpt2 only");
        }
        return null;
    }

    internal static void WriteBuiltinMarker(string directory, string builtin, string fingerprint) =>
        HfTokenizerFiles.WriteJson(directory, BuiltinMarkerFile, w =>
        {
            w.WriteStartObject();
            w.WriteString("builtin", builtin);
            w.WriteString("fingerprint", fingerprint);
            w.WriteEndObject();
        });

    static ITextTokenizer LoadBuiltinMarker(string path)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON ({e.Message})", e); }
        string? builtin = node?["builtin"]?.GetValue<string>();
        if (!string.Equals(builtin, Gpt2BuiltinTokenizer.SpecName, StringComparison.OrdinalIgnoreCase))
            throw new InvalidDataException($"{path}: unknown built-in tokenizer '{builtin}' (expected \"{Gpt2BuiltinTokenizer.SpecName}\")");
        var tokenizer = new Gpt2BuiltinTokenizer();
        string? fingerprint = node?["fingerprint"]?.GetValue<string>();
        if (fingerprint != null && fingerprint != tokenizer.Fingerprint)
            throw new InvalidDataException($"{path}: fingerprint {fingerprint} differs from this build's gpt2 data {tokenizer.Fingerprint}");
        return tokenizer;
    }
}
