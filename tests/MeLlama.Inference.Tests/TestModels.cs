using MeLlama.Model;
using MeLlama.TestSupport;
using MeLlama.Tokenization;

namespace MeLlama.Inference.Tests;

static class TestModels
{
    static readonly Lazy<ITextTokenizer?> Llama = new(() =>
        SharedData.Root is { } root && File.Exists(Path.Combine(root, SharedData.LlamaTokenizer))
            ? TokenizerLoader.Load(Path.Combine(root, SharedData.LlamaTokenizer))
            : null);

    /// <summary>The LLaMA-2 tokenizer from ../shared (skips the test when absent).</summary>
    public static ITextTokenizer LlamaTokenizer()
    {
        SharedData.Require(SharedData.LlamaTokenizer);
        return Llama.Value!;
    }

    /// <summary>The random tiny LLaMA fixture (vocab 32,000, 2 layers, GQA) from ../shared.</summary>
    public static LlamaForCausalLM TinyLlama() => HfCheckpoint.LoadModel(SharedData.Require(SharedData.TinyLlama));
}
