using MeLlama.Model;
using MeLlama.Tokenization;
using MeLlama.Training.Loop;
using static TorchSharp.torch;

namespace MeLlamaBench;

/// <summary>
/// `hf-model`: writes a randomly initialised model of the bench shape as a Hugging Face folder (config, fp32
/// safetensors, tokenizer files), the input `mellama generate --benchmark` needs. Speed does not depend on the weights.
/// </summary>
static class HfModelFolder
{
    public static Dictionary<string, object> Run(Args args)
    {
        var shape = BenchShape.FromArgs(args);
        string tokenizerSpec = args.Get("tokenizer", "gpt2");
        string output = Path.GetFullPath(args.Get("model-out") ?? throw new ArgumentException("--model-out DIR is required"));
        args.RejectUnknown();
        var tokenizer = TokenizerLoader.Load(tokenizerSpec);
        var config = shape.Config with { VocabSize = tokenizer.VocabSize, BosTokenId = tokenizer.BosId, EosTokenId = tokenizer.EosId };
        using var model = ModelFactory.RandomInit(config, CPU, ScalarType.Float32, seed: 99);
        HfCheckpoint.Save(model, output, ScalarType.Float32, writeExtraFiles: dir => tokenizer.SaveHfFiles(dir));
        return new Dictionary<string, object> { ["model"] = output, ["tokenizer"] = tokenizer.Name, ["shape"] = BenchShape.Describe(shape with { Config = config }) };
    }
}
