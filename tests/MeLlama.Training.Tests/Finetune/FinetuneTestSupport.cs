using MeLlama.Model;
using MeLlama.TestSupport;
using MeLlama.Tokenization;

namespace MeLlama.Training.Tests.Finetune;

static class FinetuneTestSupport
{
    /// <summary>
    /// One torch thread: the models here are tiny and the test machine runs several test processes on two cores, where
    /// torch's spinning worker threads slow every forward pass down by an order of magnitude.
    /// </summary>
    public static void SingleThread() => TorchSharp.torch.set_num_threads(1);

    public static LlamaConfig SmallConfig(int vocab = 300) => new()
    {
        HiddenSize = 64, NumLayers = 2, NumHeads = 4, NumKvHeads = 2, IntermediateSize = 96, VocabSize = vocab, MaxPositionEmbeddings = 128,
    };

    public static ITextTokenizer LlamaTokenizer() => TokenizerLoader.Load(SharedData.Require(SharedData.LlamaTokenizer));

    public static TorchSharp.torch.Tensor Ids(int[][] rows) =>
        TorchSharp.torch.tensor(rows.SelectMany(r => r).Select(t => (long)t).ToArray(), [rows.Length, rows[0].Length]);

    public static int[][] RandomRows(int count, int length, int vocab, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => Enumerable.Range(0, length).Select(_ => random.Next(vocab)).ToArray()).ToArray();
    }
}
