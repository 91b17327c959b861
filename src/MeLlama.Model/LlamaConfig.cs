using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MeLlama.Model;

/// <summary>
/// Shape of a LLaMA-2 decoder, with the field meanings of Hugging Face's <c>LlamaConfig</c>
/// (<c>config.json</c>). Multi-head models (7B, 13B) have <see cref="NumKvHeads"/> == <see cref="NumHeads"/>;
/// grouped-query models (70B) share each key/value head among NumHeads / NumKvHeads query heads.
/// </summary>
public sealed record LlamaConfig
{
    public required int HiddenSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKvHeads { get; init; }
    public required int IntermediateSize { get; init; }
    public required int VocabSize { get; init; }
    public double RmsNormEps { get; init; } = 1e-5;
    public double RopeTheta { get; init; } = 10000.0;
    public bool TieWordEmbeddings { get; init; }
    public int MaxPositionEmbeddings { get; init; } = 4096;
    public int BosTokenId { get; init; } = 1;
    public int EosTokenId { get; init; } = 2;
    /// <summary>Standard deviation of the normal initialisation of a freshly built model (HF's initializer_range).</summary>
    public double InitializerRange { get; init; } = 0.02;

    public int HeadDim => HiddenSize / NumHeads;

    /// <summary>Query heads that share one key/value head (1 for multi-head attention).</summary>
    public int KvGroups => NumHeads / NumKvHeads;

    // Published Hugging Face configs of meta-llama/Llama-2-{7b,13b,70b}-hf.
    public static LlamaConfig Llama2_7B { get; } = new()
    {
        HiddenSize = 4096, NumLayers = 32, NumHeads = 32, NumKvHeads = 32, IntermediateSize = 11008, VocabSize = 32000,
    };

    public static LlamaConfig Llama2_13B { get; } = new()
    {
        HiddenSize = 5120, NumLayers = 40, NumHeads = 40, NumKvHeads = 40, IntermediateSize = 13824, VocabSize = 32000,
    };

    public static LlamaConfig Llama2_70B { get; } = new()
    {
        HiddenSize = 8192, NumLayers = 80, NumHeads = 64, NumKvHeads = 8, IntermediateSize = 28672, VocabSize = 32000,
    };

    /// <summary>
    /// A few-million-parameter LLaMA (GQA, like 70B) that trains in minutes on a laptop CPU. Set
    /// <see cref="VocabSize"/>, <see cref="BosTokenId"/> and <see cref="EosTokenId"/> to the tokenizer's
    /// with a <c>with</c> expression.
    /// </summary>
    public static LlamaConfig Demo { get; } = new()
    {
        HiddenSize = 256, NumLayers = 4, NumHeads = 8, NumKvHeads = 4, IntermediateSize = 688, VocabSize = 32000,
        MaxPositionEmbeddings = 1024,
    };

    /// <summary>Throws <see cref="ArgumentException"/> when the shape cannot describe a LLaMA model.</summary>
    public LlamaConfig Validate()
    {
        void Positive(int value, string name)
        {
            if (value <= 0) throw new ArgumentException($"LlamaConfig.{name} must be positive (got {value})");
        }
        Positive(HiddenSize, nameof(HiddenSize));
        Positive(NumLayers, nameof(NumLayers));
        Positive(NumHeads, nameof(NumHeads));
        Positive(NumKvHeads, nameof(NumKvHeads));
        Positive(IntermediateSize, nameof(IntermediateSize));
        Positive(VocabSize, nameof(VocabSize));
        Positive(MaxPositionEmbeddings, nameof(MaxPositionEmbeddings));
        if (HiddenSize % NumHeads != 0)
            throw new ArgumentException($"LlamaConfig.HiddenSize ({HiddenSize}) must be a multiple of NumHeads ({NumHeads})");
        if (NumHeads % NumKvHeads != 0)
            throw new ArgumentException($"LlamaConfig.NumHeads ({NumHeads}) must be a multiple of NumKvHeads ({NumKvHeads})");
        if (HeadDim % 2 != 0)
            throw new ArgumentException($"LlamaConfig.HeadDim ({HeadDim}) must be even for rotary embeddings");
        if (!(RmsNormEps > 0)) throw new ArgumentException($"LlamaConfig.RmsNormEps must be positive (got {RmsNormEps})");
        if (!(RopeTheta > 0)) throw new ArgumentException($"LlamaConfig.RopeTheta must be positive (got {RopeTheta})");
        return this;
    }

    /// <summary>Number of parameters of <see cref="LlamaForCausalLM"/> with this shape (tied head counted once).</summary>
    public long ParameterCount()
    {
        long d = HiddenSize, kv = (long)NumKvHeads * HeadDim, q = (long)NumHeads * HeadDim;
        long attention = d * q + 2 * d * kv + q * d;
        long mlp = 3 * d * IntermediateSize;
        long layer = attention + mlp + 2 * d;
        long embeddings = (long)VocabSize * d * (TieWordEmbeddings ? 1 : 2);
        return embeddings + NumLayers * layer + d;
    }

    /// <summary>Reads a Hugging Face <c>config.json</c>; errors name the file and the field.</summary>
    public static LlamaConfig FromHfJson(string pathToConfigJson)
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(pathToConfigJson), documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false }) as JsonObject
                   ?? throw new InvalidDataException($"{pathToConfigJson}: expected a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{pathToConfigJson}: not valid JSON ({e.Message})", e);
        }
        return FromHfJson(root, pathToConfigJson);
    }

    /// <summary>Parses the fields of a Hugging Face Llama config object; <paramref name="source"/> names it in errors.</summary>
    public static LlamaConfig FromHfJson(JsonObject root, string source)
    {
        string? modelType = OptionalString(root, "model_type", source);
        if (modelType is not null && modelType != "llama")
            throw new InvalidDataException($"{source}: model_type is \"{modelType}\", expected \"llama\"");
        string? act = OptionalString(root, "hidden_act", source);
        if (act is not null && act != "silu")
            throw new InvalidDataException($"{source}: hidden_act \"{act}\" is not supported (LLaMA uses silu)");
        if (OptionalBool(root, "attention_bias", source) == true)
            throw new InvalidDataException($"{source}: attention_bias=true is not supported");
        if (OptionalBool(root, "mlp_bias", source) == true)
            throw new InvalidDataException($"{source}: mlp_bias=true is not supported");
        if (root["rope_scaling"] is JsonNode scaling && scaling.GetValueKind() != JsonValueKind.Null)
            throw new InvalidDataException($"{source}: rope_scaling is not supported (LLaMA-2 uses none)");

        int heads = RequiredInt(root, "num_attention_heads", source);
        var config = new LlamaConfig
        {
            HiddenSize = RequiredInt(root, "hidden_size", source),
            NumLayers = RequiredInt(root, "num_hidden_layers", source),
            NumHeads = heads,
            NumKvHeads = OptionalInt(root, "num_key_value_heads", source) ?? heads,
            IntermediateSize = RequiredInt(root, "intermediate_size", source),
            VocabSize = RequiredInt(root, "vocab_size", source),
            // Defaults are those of transformers' LlamaConfig when a field is absent.
            RmsNormEps = OptionalDouble(root, "rms_norm_eps", source) ?? 1e-6,
            RopeTheta = OptionalDouble(root, "rope_theta", source) ?? 10000.0,
            TieWordEmbeddings = OptionalBool(root, "tie_word_embeddings", source) ?? false,
            MaxPositionEmbeddings = OptionalInt(root, "max_position_embeddings", source) ?? 2048,
            BosTokenId = OptionalInt(root, "bos_token_id", source) ?? 1,
            EosTokenId = OptionalInt(root, "eos_token_id", source) ?? 2,
            InitializerRange = OptionalDouble(root, "initializer_range", source) ?? 0.02,
        };
        if (OptionalInt(root, "head_dim", source) is int headDim && headDim != config.HeadDim)
            throw new InvalidDataException($"{source}: head_dim {headDim} differs from hidden_size/num_attention_heads ({config.HeadDim}); not supported");
        try { return config.Validate(); }
        catch (ArgumentException e) { throw new InvalidDataException($"{source}: {e.Message}", e); }
    }

    /// <summary>
    /// The <c>config.json</c> text transformers and vLLM expect for this model, stored in
    /// <paramref name="torchDtype"/> ("float32", "bfloat16", "float16").
    /// </summary>
    public string ToHfJson(string torchDtype)
    {
        var root = new JsonObject
        {
            ["architectures"] = new JsonArray("LlamaForCausalLM"),
            ["model_type"] = "llama",
            ["hidden_act"] = "silu",
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumLayers,
            ["num_attention_heads"] = NumHeads,
            ["num_key_value_heads"] = NumKvHeads,
            ["head_dim"] = HeadDim,
            ["vocab_size"] = VocabSize,
            ["max_position_embeddings"] = MaxPositionEmbeddings,
            ["rms_norm_eps"] = RmsNormEps,
            ["rope_theta"] = RopeTheta,
            ["rope_scaling"] = null,
            ["tie_word_embeddings"] = TieWordEmbeddings,
            ["attention_bias"] = false,
            ["attention_dropout"] = 0.0,
            ["mlp_bias"] = false,
            ["pretraining_tp"] = 1,
            ["initializer_range"] = InitializerRange,
            ["bos_token_id"] = BosTokenId,
            ["eos_token_id"] = EosTokenId,
            ["use_cache"] = true,
            ["torch_dtype"] = torchDtype,
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
    }

    static JsonNode? Field(JsonObject root, string name) =>
        root[name] is JsonNode node && node.GetValueKind() != JsonValueKind.Null ? node : null;

    static int RequiredInt(JsonObject root, string name, string source) =>
        OptionalInt(root, name, source) ?? throw new InvalidDataException($"{source}: required field \"{name}\" is missing");

    static int? OptionalInt(JsonObject root, string name, string source)
    {
        var node = Field(root, name);
        // eos_token_id may be a list (several stop tokens); the first is the canonical one.
        if (node is JsonArray list) node = list.Count > 0 ? list[0] : null;
        if (node is null) return null;
        if (node.GetValueKind() == JsonValueKind.Number && node.AsValue().TryGetValue(out int value)) return value;
        if (node.GetValueKind() == JsonValueKind.Number && node.AsValue().TryGetValue(out double d) && d == Math.Floor(d) && Math.Abs(d) < int.MaxValue) return (int)d;
        throw new InvalidDataException($"{source}: field \"{name}\" must be an integer (got {node.ToJsonString()})");
    }

    static double? OptionalDouble(JsonObject root, string name, string source)
    {
        var node = Field(root, name);
        if (node is null) return null;
        if (node.GetValueKind() == JsonValueKind.Number) return node.GetValue<double>();
        if (node.GetValueKind() == JsonValueKind.String &&
            double.TryParse(node.GetValue<string>(), NumberStyles.Float, CultureInfo.InvariantCulture, out double parsed)) return parsed;
        throw new InvalidDataException($"{source}: field \"{name}\" must be a number (got {node.ToJsonString()})");
    }

    static bool? OptionalBool(JsonObject root, string name, string source)
    {
        var node = Field(root, name);
        if (node is null) return null;
        return node.GetValueKind() switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new InvalidDataException($"{source}: field \"{name}\" must be true or false (got {node.ToJsonString()})"),
        };
    }

    static string? OptionalString(JsonObject root, string name, string source)
    {
        var node = Field(root, name);
        if (node is null) return null;
        return node.GetValueKind() == JsonValueKind.String
            ? node.GetValue<string>()
            : throw new InvalidDataException($"{source}: field \"{name}\" must be a string (got {node.ToJsonString()})");
    }
}
