namespace MeLlama.Tokenization;

/// <summary>
/// What the rest of MeLlama needs from a tokenizer. Implementations are thread-safe for concurrent
/// Encode/Decode calls (the data pipeline tokenizes on all cores with one instance).
/// </summary>
public interface ITextTokenizer
{
    /// <summary>Short description, e.g. "llama2-sentencepiece" or "gpt2-bpe (built-in demo)".</summary>
    string Name { get; }

    /// <summary>Number of ids the model's embedding must cover.</summary>
    int VocabSize { get; }

    int BosId { get; }
    int EosId { get; }

    /// <summary>sha256 of the tokenizer's defining file(s): recorded in data manifests and checkpoints.</summary>
    string Fingerprint { get; }

    /// <summary>Token ids for <paramref name="text"/>, optionally wrapped in BOS/EOS.</summary>
    int[] Encode(string text, bool addBos = false, bool addEos = false);

    string Decode(ReadOnlySpan<int> ids);

    /// <summary>
    /// Writes the files an HF model folder needs for this tokenizer (tokenizer.model,
    /// tokenizer_config.json, special_tokens_map.json, ...). <paramref name="chatTemplate"/> is a
    /// Jinja chat template to record in tokenizer_config.json, or null.
    /// </summary>
    void SaveHfFiles(string directory, string? chatTemplate = null);
}
