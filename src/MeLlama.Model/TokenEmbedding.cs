using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>Token id → vector lookup (HF <c>embed_tokens</c>): weight [VocabSize, HiddenSize].</summary>
public sealed class TokenEmbedding : nn.Module<Tensor, Tensor>
{
    // Field name = HF parameter name ("weight"); a managed Parameter (not TorchSharp's native Embedding)
    // so that sharded engines and loaders can replace or fill its storage like any other weight.
    Parameter weight;

    public TokenEmbedding(long vocabSize, long hiddenSize, ParameterFactory factory) : base("embed_tokens")
    {
        weight = factory.Empty(vocabSize, hiddenSize);
        RegisterComponents();
    }

    public Parameter Weight => weight;

    /// <summary>Replaces the weight parameter (see <see cref="LlamaForCausalLM.ReplaceParameters"/>).</summary>
    internal void ReplaceWeight(Parameter replacement)
    {
        if (ReferenceEquals(replacement, weight)) return;
        var old = weight;
        weight = replacement;
        ConditionallyRegisterParameter(nameof(weight), replacement);
        old.Dispose(); // as TorchSharp's Linear.weight setter does
    }

    /// <summary>ids [..] int64 → vectors [.., HiddenSize].</summary>
    public override Tensor forward(Tensor ids)
    {
        long[] shape = [.. ids.shape, weight.shape[1]];
        return weight.index_select(0, ids.reshape(-1)).view(shape);
    }
}
