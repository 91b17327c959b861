using System.Security.Cryptography;
using MeLlama.Tokenization.SentencePiece;
using Microsoft.ML.Tokenizers;

namespace MeLlama.Tokenization;

/// <summary>
/// The LLaMA(-2) SentencePiece BPE tokenizer from a <c>tokenizer.model</c> file. Encoding runs
/// <see cref="SentencePieceBpeEncoder"/> (exact SentencePiece merge order; see there for why it is not
/// Microsoft.ML.Tokenizers' encoder); decoding uses Microsoft.ML.Tokenizers' <see cref="LlamaTokenizer"/>
/// built from the same bytes. Text is never parsed for control pieces: "&lt;s&gt;" in a document is
/// ordinary text, as in SentencePiece, so data cannot inject BOS/EOS.
/// </summary>
public sealed class LlamaSentencePieceTokenizer : ITextTokenizer
{
    /// <summary>LLaMA-2's context length, recorded as model_max_length in tokenizer_config.json.</summary>
    public const int DefaultModelMaxLength = 4096;

    readonly byte[] _modelBytes;
    readonly SentencePieceModelFile _model;
    readonly SentencePieceBpeEncoder _encoder;
    readonly LlamaTokenizer _library;

    public string Name => "llama-sentencepiece-bpe";
    public int VocabSize => _model.Pieces.Count;
    public int BosId => _model.BosId;
    public int EosId => _model.EosId;
    public int UnkId => _model.UnkId;
    public string Fingerprint { get; }
    public SentencePieceBpeEncoder Encoder => _encoder;

    LlamaSentencePieceTokenizer(byte[] modelBytes, string sourceName)
    {
        _modelBytes = modelBytes;
        _model = SentencePieceModelFile.Parse(modelBytes, sourceName);
        if (_model.BosId < 0 || _model.EosId < 0)
            throw new NotSupportedException($"{sourceName}: the model defines no BOS/EOS pieces (bos_id {_model.BosId}, eos_id {_model.EosId})");
        _encoder = new SentencePieceBpeEncoder(_model);
        using var stream = new MemoryStream(modelBytes, writable: false);
        _library = LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
        Fingerprint = Convert.ToHexStringLower(SHA256.HashData(modelBytes));
    }

    public static LlamaSentencePieceTokenizer FromFile(string tokenizerModelPath) =>
        new(File.ReadAllBytes(tokenizerModelPath), tokenizerModelPath);

    public static LlamaSentencePieceTokenizer FromBytes(byte[] modelBytes, string sourceName = "tokenizer.model") =>
        new((byte[])modelBytes.Clone(), sourceName);

    public string PieceText(int id) => _model.Pieces[id].Text;

    public int[] Encode(string text, bool addBos = false, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        return _encoder.Encode(text, addBos ? BosId : -1, addEos ? EosId : -1);
    }

    public string Decode(ReadOnlySpan<int> ids)
    {
        foreach (int id in ids)
            if ((uint)id >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} is outside the vocabulary (0..{VocabSize - 1})");
        return _library.Decode(ids.ToArray());
    }

    public void SaveHfFiles(string directory, string? chatTemplate = null)
    {
        Directory.CreateDirectory(directory);
        string bos = PieceText(BosId), eos = PieceText(EosId), unk = PieceText(UnkId);
        HfTokenizerFiles.WriteBytes(directory, "tokenizer.model", _modelBytes);
        HfTokenizerFiles.WriteTokenizerConfig(directory, new HfTokenizerConfig(
            TokenizerClass: "LlamaTokenizer", BosToken: bos, EosToken: eos, UnkToken: unk,
            AddBosToken: true, AddEosToken: false, ModelMaxLength: DefaultModelMaxLength,
            ChatTemplate: chatTemplate, Legacy: false));
        HfTokenizerFiles.WriteSpecialTokensMap(directory, bos, eos, unk);
    }
}
