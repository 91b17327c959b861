using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>The safetensors dtype names MeLlama reads and writes, and their torch types and sizes.</summary>
public static class SafeTensorsDtype
{
    static readonly (string Name, ScalarType Type, int Size)[] Known =
    [
        ("F64", ScalarType.Float64, 8),
        ("F32", ScalarType.Float32, 4),
        ("F16", ScalarType.Float16, 2),
        ("BF16", ScalarType.BFloat16, 2),
        ("I64", ScalarType.Int64, 8),
        ("I32", ScalarType.Int32, 4),
        ("I16", ScalarType.Int16, 2),
        ("I8", ScalarType.Int8, 1),
        ("U8", ScalarType.Byte, 1),
        ("BOOL", ScalarType.Bool, 1),
    ];

    public static bool TryParse(string name, out ScalarType type, out int size)
    {
        foreach (var known in Known)
            if (known.Name == name)
            {
                (type, size) = (known.Type, known.Size);
                return true;
            }
        (type, size) = (default, 0);
        return false;
    }

    public static string NameOf(ScalarType type)
    {
        foreach (var known in Known) if (known.Type == type) return known.Name;
        throw new NotSupportedException($"dtype {type} has no safetensors name supported here");
    }

    public static int SizeOf(ScalarType type)
    {
        foreach (var known in Known) if (known.Type == type) return known.Size;
        throw new NotSupportedException($"dtype {type} has no safetensors name supported here");
    }

    /// <summary>HF's <c>torch_dtype</c> string for a model stored in <paramref name="type"/>.</summary>
    public static string TorchDtypeName(ScalarType type) => type switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        ScalarType.Float64 => "float64",
        _ => throw new NotSupportedException($"dtype {type} is not a model weight dtype"),
    };

    /// <summary>Parses a user-facing dtype: fp32/float32, bf16/bfloat16, fp16/float16.</summary>
    public static ScalarType ParseModelDtype(string text) => text.ToLowerInvariant() switch
    {
        "fp32" or "float32" or "f32" => ScalarType.Float32,
        "bf16" or "bfloat16" => ScalarType.BFloat16,
        "fp16" or "float16" or "f16" or "half" => ScalarType.Float16,
        _ => throw new ArgumentException($"unknown dtype \"{text}\" (expected fp32, bf16 or fp16)"),
    };
}
