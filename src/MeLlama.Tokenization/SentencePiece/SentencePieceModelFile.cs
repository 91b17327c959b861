using System.Buffers.Binary;
using System.Text;

namespace MeLlama.Tokenization.SentencePiece;

/// <summary>Piece kinds of sentencepiece_model.proto (ModelProto.SentencePiece.Type).</summary>
public enum PieceType
{
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

public readonly record struct Piece(string Text, float Score, PieceType Type);

/// <summary>
/// The parts of a SentencePiece <c>tokenizer.model</c> (a serialized <c>ModelProto</c>) that encoding needs:
/// the pieces with score and type, the trainer flags that change encoding (model type, byte fallback,
/// special ids) and the normalizer flags. Microsoft.ML.Tokenizers parses the same file but does not expose
/// scores or types, and the merge loop needs them, so this is a small hand-written protobuf reader
/// (only varint, 32-bit and length-delimited wire types occur in this message).
/// </summary>
public sealed class SentencePieceModelFile
{
    public required IReadOnlyList<Piece> Pieces { get; init; }
    /// <summary>TrainerSpec.model_type: 1 unigram, 2 BPE, 3 word, 4 char.</summary>
    public int ModelType { get; init; } = 1;
    public bool ByteFallback { get; init; }
    public int UnkId { get; init; }
    public int BosId { get; init; } = 1;
    public int EosId { get; init; } = 2;
    public int PadId { get; init; } = -1;
    public bool TreatWhitespaceAsSuffix { get; init; }
    public string NormalizerName { get; init; } = "";
    public int PrecompiledCharsMapLength { get; init; }
    public bool AddDummyPrefix { get; init; } = true;
    public bool RemoveExtraWhitespaces { get; init; } = true;
    public bool EscapeWhitespaces { get; init; } = true;

    public static SentencePieceModelFile Read(string path) => Parse(File.ReadAllBytes(path), path);

    public static SentencePieceModelFile Parse(ReadOnlySpan<byte> data, string sourceName = "tokenizer.model")
    {
        var pieces = new List<Piece>();
        TrainerFields trainer = new();
        NormalizerFields normalizer = new();
        var reader = new ProtoReader(data, sourceName);
        while (!reader.End)
        {
            var (field, wire) = reader.ReadKey();
            switch (field, wire)
            {
                case (1, 2): pieces.Add(ParsePiece(reader.ReadBytes(), sourceName)); break;
                case (2, 2): trainer = ParseTrainer(reader.ReadBytes(), sourceName); break;
                case (3, 2): normalizer = ParseNormalizer(reader.ReadBytes(), sourceName); break;
                default: reader.Skip(wire); break;
            }
        }
        if (pieces.Count == 0) throw new InvalidDataException($"{sourceName}: no pieces; not a SentencePiece model");
        return new SentencePieceModelFile
        {
            Pieces = pieces,
            ModelType = trainer.ModelType,
            ByteFallback = trainer.ByteFallback,
            UnkId = trainer.UnkId,
            BosId = trainer.BosId,
            EosId = trainer.EosId,
            PadId = trainer.PadId,
            TreatWhitespaceAsSuffix = trainer.TreatWhitespaceAsSuffix,
            NormalizerName = normalizer.Name,
            PrecompiledCharsMapLength = normalizer.CharsMapLength,
            AddDummyPrefix = normalizer.AddDummyPrefix,
            RemoveExtraWhitespaces = normalizer.RemoveExtraWhitespaces,
            EscapeWhitespaces = normalizer.EscapeWhitespaces,
        };
    }

    static Piece ParsePiece(ReadOnlySpan<byte> data, string source)
    {
        string text = "";
        float score = 0;
        var type = PieceType.Normal; // proto default
        var reader = new ProtoReader(data, source);
        while (!reader.End)
        {
            var (field, wire) = reader.ReadKey();
            switch (field, wire)
            {
                case (1, 2): text = Encoding.UTF8.GetString(reader.ReadBytes()); break;
                case (2, 5): score = reader.ReadFloat(); break;
                case (3, 0): type = (PieceType)(int)reader.ReadVarint(); break;
                default: reader.Skip(wire); break;
            }
        }
        return new Piece(text, score, type);
    }

    sealed class TrainerFields
    {
        public int ModelType = 1, UnkId = 0, BosId = 1, EosId = 2, PadId = -1;
        public bool ByteFallback, TreatWhitespaceAsSuffix;
    }

    static TrainerFields ParseTrainer(ReadOnlySpan<byte> data, string source)
    {
        var t = new TrainerFields();
        var reader = new ProtoReader(data, source);
        while (!reader.End)
        {
            var (field, wire) = reader.ReadKey();
            if (wire != 0) { reader.Skip(wire); continue; }
            long v = (long)reader.ReadVarint();
            switch (field)
            {
                case 3: t.ModelType = (int)v; break;
                case 24: t.TreatWhitespaceAsSuffix = v != 0; break;
                case 35: t.ByteFallback = v != 0; break;
                case 40: t.UnkId = (int)v; break;
                case 41: t.BosId = (int)v; break;
                case 42: t.EosId = (int)v; break;
                case 43: t.PadId = (int)v; break;
            }
        }
        return t;
    }

    sealed class NormalizerFields
    {
        public string Name = "";
        public int CharsMapLength;
        public bool AddDummyPrefix = true, RemoveExtraWhitespaces = true, EscapeWhitespaces = true;
    }

    static NormalizerFields ParseNormalizer(ReadOnlySpan<byte> data, string source)
    {
        var n = new NormalizerFields();
        var reader = new ProtoReader(data, source);
        while (!reader.End)
        {
            var (field, wire) = reader.ReadKey();
            switch (field, wire)
            {
                case (1, 2): n.Name = Encoding.UTF8.GetString(reader.ReadBytes()); break;
                case (2, 2): n.CharsMapLength = reader.ReadBytes().Length; break;
                case (3, 0): n.AddDummyPrefix = reader.ReadVarint() != 0; break;
                case (4, 0): n.RemoveExtraWhitespaces = reader.ReadVarint() != 0; break;
                case (5, 0): n.EscapeWhitespaces = reader.ReadVarint() != 0; break;
                default: reader.Skip(wire); break;
            }
        }
        return n;
    }

    /// <summary>Minimal protobuf wire-format cursor.</summary>
    ref struct ProtoReader
    {
        readonly ReadOnlySpan<byte> _data;
        readonly string _source;
        int _pos;

        public ProtoReader(ReadOnlySpan<byte> data, string source)
        {
            _data = data;
            _source = source;
        }

        public readonly bool End => _pos >= _data.Length;

        public (int Field, int Wire) ReadKey()
        {
            ulong key = ReadVarint();
            return ((int)(key >> 3), (int)(key & 7));
        }

        public ulong ReadVarint()
        {
            ulong result = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                if (_pos >= _data.Length) throw Truncated();
                byte b = _data[_pos++];
                result |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return result;
            }
            throw new InvalidDataException($"{_source}: malformed varint at byte {_pos}");
        }

        public float ReadFloat()
        {
            if (_pos + 4 > _data.Length) throw Truncated();
            float f = BinaryPrimitives.ReadSingleLittleEndian(_data.Slice(_pos, 4));
            _pos += 4;
            return f;
        }

        public ReadOnlySpan<byte> ReadBytes()
        {
            ulong len = ReadVarint();
            if (len > (ulong)(_data.Length - _pos)) throw Truncated();
            var slice = _data.Slice(_pos, (int)len);
            _pos += (int)len;
            return slice;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: ReadVarint(); break;
                case 1: _pos += 8; break;
                case 2: ReadBytes(); break;
                case 5: _pos += 4; break;
                default: throw new InvalidDataException($"{_source}: unsupported protobuf wire type {wire} at byte {_pos}");
            }
            if (_pos > _data.Length) throw Truncated();
        }

        readonly InvalidDataException Truncated() => new($"{_source}: truncated protobuf at byte {_pos}; not a SentencePiece model?");
    }
}
