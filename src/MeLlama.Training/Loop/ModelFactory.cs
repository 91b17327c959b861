using MeLlama.Model;
using TorchSharp;
using MeLlama.Training.Config;
using static TorchSharp.torch;

namespace MeLlama.Training.Loop;

/// <summary>Builds the model a run starts from: a Hugging Face checkpoint (continual pretraining) or a random init.</summary>
public static class ModelFactory
{
    public static ScalarType ComputeDtype(string precision) => precision == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32;

    /// <summary>The LlamaConfig for random init from the recipe's arch (vocab from the tokenizer when not given).</summary>
    public static LlamaConfig FromArch(ArchSection a, double initStd, int? tokenizerVocab, int bos = 1, int eos = 2)
    {
        int vocab = a.VocabSize ?? tokenizerVocab ?? throw new ConfigError("model.arch.vocab_size is not set and there is no tokenizer to take it from (set model.tokenizer)");
        return new LlamaConfig
        {
            HiddenSize = a.HiddenSize, NumLayers = a.NumHiddenLayers, NumHeads = a.NumAttentionHeads,
            NumKvHeads = a.NumKeyValueHeads ?? a.NumAttentionHeads, IntermediateSize = a.IntermediateSize, VocabSize = vocab,
            RmsNormEps = a.RmsNormEps, RopeTheta = a.RopeTheta, TieWordEmbeddings = a.TieWordEmbeddings,
            MaxPositionEmbeddings = a.MaxPositionEmbeddings, BosTokenId = bos, EosTokenId = eos, InitializerRange = initStd,
        }.Validate();
    }

    /// <summary>
    /// A fresh model: HF init (normal(0, std), norms = 1) from <paramref name="seed"/>, done in fp32 and then cast,
    /// so bf16 and fp32 runs start from the same weights.
    /// </summary>
    public static LlamaForCausalLM RandomInit(LlamaConfig config, Device device, ScalarType dtype, ulong seed)
    {
        var model = new LlamaForCausalLM(config, device, ScalarType.Float32, initialize: true, seed: unchecked((long)seed));
        if (dtype != ScalarType.Float32) model.to(dtype);
        return model;
    }

    /// <summary>An uninitialised model of <paramref name="config"/> (weights come from a checkpoint next).</summary>
    public static LlamaForCausalLM Empty(LlamaConfig config, Device device, ScalarType dtype) =>
        new(config, device, dtype, initialize: false);

    /// <summary>
    /// A shape-only model (the meta device: no memory) for the sharded engine, which gives each rank real tensors
    /// and fills only its slices (<see cref="Engine.Sharded.FsdpTrainStep"/> with an <see cref="Engine.Sharded.IMasterSource"/>).
    /// </summary>
    public static LlamaForCausalLM Meta(LlamaConfig config, ScalarType dtype) => new(config, META, dtype, initialize: false);

    /// <summary>Matmul parameters for FLOP counting: all but the input embedding (a lookup), lm_head counted (also when tied).</summary>
    public static long MatmulParameters(LlamaConfig c)
    {
        long embedding = (long)c.VocabSize * c.HiddenSize;
        long total = c.ParameterCount();
        return c.TieWordEmbeddings ? total : total - embedding;
    }

    public static Device ResolveDevice(string spec)
    {
        if (spec == "auto") return cuda.is_available() ? CUDA : CPU;
        if (spec.StartsWith("cuda", StringComparison.Ordinal) && !cuda.is_available())
            throw new ConfigError($"device '{spec}' requested but CUDA is not available in this build (build with -p:TorchBackend=cuda)");
        return new Device(spec);
    }
}
