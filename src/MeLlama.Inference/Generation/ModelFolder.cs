using MeLlama.Inference.ChatTemplates;
using MeLlama.Model;
using MeLlama.Tokenization;
using static TorchSharp.torch;

namespace MeLlama.Inference.Generation;

/// <summary>An HF model folder loaded for generation: weights, its tokenizer and the chat template it records (if any).</summary>
public sealed class ModelFolder : IDisposable
{
    ModelFolder(LlamaForCausalLM model, ITextTokenizer tokenizer, IChatTemplate? template)
    {
        Model = model;
        Tokenizer = tokenizer;
        StoredTemplate = template;
    }

    public LlamaForCausalLM Model { get; }
    public ITextTokenizer Tokenizer { get; }
    /// <summary>The template the folder was exported with (<see cref="ChatTemplateStore"/>), or null.</summary>
    public IChatTemplate? StoredTemplate { get; }

    /// <param name="tokenizerSpec">Override of the folder's own tokenizer (gpt2, a tokenizer.model, another folder).</param>
    public static ModelFolder Load(string dir, Device? device = null, ScalarType dtype = ScalarType.Float32, string? tokenizerSpec = null)
    {
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"model folder {dir} does not exist");
        var tokenizer = tokenizerSpec is not null
            ? TokenizerLoader.Load(tokenizerSpec)
            : TokenizerLoader.TryLoadFromModelFolder(dir) ?? throw new FileNotFoundException($"{dir} has no tokenizer (tokenizer.model or {TokenizerLoader.BuiltinMarkerFile}); pass --tokenizer");
        var template = ChatTemplateStore.TryRead(dir);
        var model = HfCheckpoint.LoadModel(dir, device, dtype);
        if (tokenizer.VocabSize > model.Config.VocabSize)
        {
            model.Dispose();
            throw new InvalidDataException($"the tokenizer has {tokenizer.VocabSize} ids but {dir}'s model only {model.Config.VocabSize}");
        }
        return new ModelFolder(model, tokenizer, template);
    }

    /// <summary>
    /// The template to use: "auto" (or null) = the folder's own, else <see cref="ChatTemplateRegistry.NoneTemplate"/>;
    /// otherwise a built-in name.
    /// </summary>
    public IChatTemplate ResolveTemplate(string? requested) =>
        requested is null || requested.Equals("auto", StringComparison.OrdinalIgnoreCase)
            ? StoredTemplate ?? ChatTemplateRegistry.NoneTemplate
            : ChatTemplateRegistry.Get(requested);

    public void Dispose() => Model.Dispose();
}
