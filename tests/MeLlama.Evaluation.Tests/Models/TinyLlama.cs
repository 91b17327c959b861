using System.Text.Json;
using MeLlama.Model;
using MeLlama.TestSupport;
using MeLlama.Tokenization;

namespace MeLlama.Evaluation.Tests.Models;

/// <summary>The tiny random LLaMA fixture and its float64 reference log-probs, loaded once per test class.</summary>
public sealed class TinyLlamaFixture : IDisposable
{
    readonly Lazy<LlamaForCausalLM> _model = new(() =>
    {
        var m = HfCheckpoint.LoadModel(SharedData.Require(SharedData.TinyLlama));
        m.eval();
        return m;
    });
    readonly Lazy<ITextTokenizer> _tokenizer = new(() => TokenizerLoader.Load(SharedData.Require(SharedData.LlamaTokenizer)));

    public LlamaForCausalLM Model => _model.Value;
    public ITextTokenizer Tokenizer => _tokenizer.Value;

    public static IReadOnlyList<(int[] Tokens, double[] LogProbs)> Reference()
    {
        string path = Path.Combine(SharedData.Require(SharedData.TinyLlama), "reference.jsonl");
        return File.ReadLines(path).Select(line =>
        {
            using var doc = JsonDocument.Parse(line);
            var r = doc.RootElement;
            return (r.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                    r.GetProperty("logprobs").EnumerateArray().Select(e => e.GetDouble()).ToArray());
        }).ToList();
    }

    public void Dispose()
    {
        if (_model.IsValueCreated) _model.Value.Dispose();
    }
}
