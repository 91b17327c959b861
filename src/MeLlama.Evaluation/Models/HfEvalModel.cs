using MeLlama.Evaluation.Harness;
using MeLlama.Evaluation.Reporting;
using MeLlama.Model;
using MeLlama.Tokenization;
using static TorchSharp.torch;

namespace MeLlama.Evaluation.Models;

/// <summary>Loads an HF model folder (and its tokenizer) into the scorer/generator pair a session needs.</summary>
public sealed class HfEvalModel : IDisposable
{
    readonly LlamaForCausalLM _model;

    public EvalModel Model { get; }
    public ITextTokenizer Tokenizer { get; }

    HfEvalModel(LlamaForCausalLM model, EvalModel evalModel, ITextTokenizer tokenizer)
    {
        _model = model;
        Model = evalModel;
        Tokenizer = tokenizer;
    }

    /// <param name="tokenizerSpec">Tokenizer to use when the folder has none (see TokenizerLoader.Load).</param>
    /// <param name="fingerprintMemo">Where to remember the weights' hash between runs (null: always hash).</param>
    public static HfEvalModel Load(string hfDir, string? tokenizerSpec, Device? device, ScalarType dtype, int batchSize, int maxBatchTokens, string? fingerprintMemo)
    {
        var tokenizer = tokenizerSpec != null ? TokenizerLoader.Load(tokenizerSpec)
            : TokenizerLoader.TryLoadFromModelFolder(hfDir)
              ?? throw new FileNotFoundException($"{hfDir} holds no tokenizer (tokenizer.model or {TokenizerLoader.BuiltinMarkerFile}); pass --tokenizer");
        string fingerprint = ModelFingerprint.Compute(hfDir, fingerprintMemo);
        var model = HfCheckpoint.LoadModel(hfDir, device, dtype);
        model.eval();
        if (tokenizer.VocabSize > model.Config.VocabSize)
        {
            model.Dispose();
            throw new InvalidDataException($"Tokenizer {tokenizer.Name} has {tokenizer.VocabSize} ids but the model's vocabulary is {model.Config.VocabSize}");
        }
        var lm = new LlamaCausalLanguageModel(model, fingerprint, maxBatchTokens);
        var info = new ModelInfo(Path.GetFullPath(hfDir), fingerprint, model.Config.ParameterCount(), $"{tokenizer.Name} ({tokenizer.Fingerprint})");
        var generator = new KvCacheTextGenerator(new Inference.Generation.TextGenerator(model, tokenizer), fingerprint);
        var evalModel = new EvalModel(info, new TokenizedLogLikelihoodScorer(tokenizer, lm, batchSize: 64), generator, lm, tokenizer.Fingerprint);
        return new HfEvalModel(model, evalModel, tokenizer);
    }

    public void Dispose() => _model.Dispose();
}
