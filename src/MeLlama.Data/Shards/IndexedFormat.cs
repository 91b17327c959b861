namespace MeLlama.Data.Shards;

/// <summary>
/// Megatron-LM "MMIDIDX" indexed dataset format (megatron/core/datasets/indexed_dataset.py), so shards we
/// write can be read by Megatron/NeMo tooling and vice versa. Layout of the <c>.idx</c> file, little-endian:
/// <code>
///   9 bytes  magic "MMIDIDX\0\0"
///   uint64   version = 1
///   uint8    dtype code of the .bin tokens (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16)
///   uint64   sequence count S
///   uint64   document-index count = D + 1 (Megatron writes len(document_indices), which starts with 0)
///   int32[S] sequence lengths (tokens)
///   int64[S] sequence byte pointers into .bin
///   int64[D+1] document indices: 0, then the sequence index that ends each document
/// </code>
/// We write one sequence per document (EOS appended), so document indices are 0,1,...,D.
/// The <c>.bin</c> file is the raw concatenation of all sequences' tokens.
/// </summary>
public static class IndexedFormat
{
    public static ReadOnlySpan<byte> Magic => "MMIDIDX\0\0"u8;
    public const ulong Version = 1;
    public const int HeaderBytes = 9 + 8 + 1 + 8 + 8; // 34

    /// <summary>Megatron's token dtype choice: uint16 when every id fits below 65,500, else int32.</summary>
    public static TokenDType DTypeForVocab(int vocabSize) => vocabSize < 65_500 ? TokenDType.UInt16 : TokenDType.Int32;

    public static int Size(TokenDType dtype) => dtype switch
    {
        TokenDType.UInt8 or TokenDType.Int8 => 1,
        TokenDType.Int16 or TokenDType.UInt16 => 2,
        TokenDType.Int32 or TokenDType.Float32 => 4,
        TokenDType.Int64 or TokenDType.Float64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown Megatron dtype code"),
    };

    public static string IdxPath(string binOrPrefix) => Path.ChangeExtension(binOrPrefix, ".idx");
    public static string BinPath(string idxOrPrefix) => Path.ChangeExtension(idxOrPrefix, ".bin");
}

/// <summary>Megatron's numeric dtype codes (DType enum in indexed_dataset.py).</summary>
public enum TokenDType : byte
{
    UInt8 = 1,
    Int8 = 2,
    Int16 = 3,
    Int32 = 4,
    Int64 = 5,
    Float64 = 6,
    Float32 = 7,
    UInt16 = 8,
}
