using MeLlama.Model;

namespace MeLlamaBench;

/// <summary>Model shape + batch for a training-step benchmark. run.sh passes the same numbers to the PyTorch reference.</summary>
sealed record BenchShape(string Name, LlamaConfig Config, int Batch, int SeqLen)
{
    /// <summary>Named presets; any field can be overridden with --hidden, --layers, --heads, --kv-heads, --ffn, --vocab, --batch, --seq.</summary>
    public static BenchShape FromArgs(Args args)
    {
        string name = args.Get("shape", "130m");
        var (d, l, h, ff, v, b, t) = name switch
        {
            // ~134M parameters (110M in matmuls): the reference shape.
            "130m" => (768, 12, 12, 2048, 32000, 4, 256),
            // Quick runs: a few seconds per step on 2 cores.
            "small" => (256, 4, 8, 688, 32000, 4, 128),
            // Smoke tests of the harness.
            "tiny" => (64, 2, 4, 176, 512, 2, 32),
            // LLaMA-2 13B's layer (d=5120, 40 heads, SwiGLU 13824) × 4 with its vocabulary: the GPU MFU target shape
            // (~1.6B parameters; one H100 holds it with bf16 weights, fp32 masters and AdamW).
            "13b-layers" => (5120, 4, 40, 13824, 32000, 4, 2048),
            _ => throw new ArgumentException($"unknown --shape '{name}' (130m, small, tiny, 13b-layers)"),
        };
        d = args.Int("hidden", d); l = args.Int("layers", l); h = args.Int("heads", h);
        int kv = args.Int("kv-heads", h);
        ff = args.Int("ffn", ff); v = args.Int("vocab", v); b = args.Int("batch", b); t = args.Int("seq", t);
        var config = new LlamaConfig
        {
            HiddenSize = d, NumLayers = l, NumHeads = h, NumKvHeads = kv, IntermediateSize = ff, VocabSize = v,
            MaxPositionEmbeddings = Math.Max(2048, t), TieWordEmbeddings = false,
        }.Validate();
        return new BenchShape(name, config, b, t);
    }

    /// <summary>
    /// Training FLOPs per token, the same formula in the PyTorch reference: 6·N over the matmul weights (all but the
    /// input embedding, a lookup; lm_head counted) + 12·L·d·T for attention scores and weighted values (PaLM appendix B).
    /// </summary>
    public double TrainFlopsPerToken
    {
        get
        {
            long matmul = Config.ParameterCount() - (long)Config.VocabSize * Config.HiddenSize - (2L * Config.NumLayers + 1) * Config.HiddenSize;
            return 6.0 * matmul + 12.0 * Config.NumLayers * Config.HiddenSize * SeqLen;
        }
    }

    public long MatmulParameters => Config.ParameterCount() - (long)Config.VocabSize * Config.HiddenSize - (2L * Config.NumLayers + 1) * Config.HiddenSize;

    public static Dictionary<string, object> Describe(BenchShape shape) => shape.Describe();

    public Dictionary<string, object> Describe() => new()
    {
        ["name"] = Name, ["hidden"] = Config.HiddenSize, ["layers"] = Config.NumLayers, ["heads"] = Config.NumHeads,
        ["kv_heads"] = Config.NumKvHeads, ["ffn"] = Config.IntermediateSize, ["vocab"] = Config.VocabSize,
        ["batch"] = Batch, ["seq"] = SeqLen, ["parameters"] = Config.ParameterCount(), ["matmul_parameters"] = MatmulParameters,
        ["train_flops_per_token"] = TrainFlopsPerToken,
    };
}
