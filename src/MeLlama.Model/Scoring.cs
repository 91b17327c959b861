using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>Log-likelihoods of token sequences under a model.</summary>
public static class Scoring
{
    /// <summary>
    /// Entry i is log p(tokens[i+1] | tokens[0..i]) (length tokens.Length − 1), computed with the softmax
    /// in fp32 whatever the model's dtype.
    /// </summary>
    public static float[] NextTokenLogProbs(LlamaForCausalLM model, int[] tokens)
    {
        if (tokens.Length < 2) return [];
        if (tokens.Length > model.Config.MaxPositionEmbeddings)
            throw new ArgumentException($"Sequence of {tokens.Length} tokens is longer than the model's {model.Config.MaxPositionEmbeddings} positions");
        foreach (int id in tokens)
            if (id < 0 || id >= model.Config.VocabSize)
                throw new ArgumentException($"Token id {id} is outside the vocabulary [0, {model.Config.VocabSize})");

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = tensor(tokens.Select(t => (long)t).ToArray(), ScalarType.Int64, model.Device).unsqueeze(0);
        var logits = model.forward(ids.narrow(1, 0, tokens.Length - 1))[0];                 // [T−1, V]
        var logProbs = logits.to(ScalarType.Float32).log_softmax(-1);
        var targets = ids[0].narrow(0, 1, tokens.Length - 1).unsqueeze(1);                     // [T−1, 1]
        return logProbs.gather(1, targets).squeeze(1).cpu().data<float>().ToArray();
    }
}
