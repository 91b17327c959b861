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
    /// a built-in name; or a JSON file holding a custom template object (or a model folder's template file).
    /// </summary>
    public IChatTemplate ResolveTemplate(string? requested)
    {
        if (requested is null || requested.Equals("auto", StringComparison.OrdinalIgnoreCase))
            return StoredTemplate ?? ChatTemplateRegistry.NoneTemplate;
        if (ChatTemplateRegistry.TryGet(requested, out var builtIn)) return builtIn;
        if (File.Exists(requested))
        {
            System.Text.Json.Nodes.JsonNode? node;
            try { node = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(requested)); }
            catch (System.Text.Json.JsonException e) { throw new InvalidDataException($"{requested}: not valid JSON (line {e.LineNumber + 1})", e); }
            // Either a template object, or our model-folder file {"template": {...}, "jinja": ...}.
            return ChatTemplateRegistry.FromJson(node is System.Text.Json.Nodes.JsonObject o && o["template"] is { } inner ? inner : node, requested);
        }
        return ChatTemplateRegistry.Get(requested);
    }

    public void Dispose() => Model.Dispose();
}
