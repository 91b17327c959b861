using MeLlama.Inference.ChatTemplates;
using MeLlama.Model;
using MeLlama.Tokenization;
using static TorchSharp.torch;

namespace MeLlama.Training.Finetune;

/// <summary>
/// Writes a fine-tuned model as a complete HF folder: config, weights, tokenizer files whose tokenizer_config.json
/// carries the chat template as Jinja, and <see cref="ChatTemplateStore.FileName"/> for our own generate/chat.
/// </summary>
public static class FinetunedModelWriter
{
    /// <param name="writeExtraFiles">More files to add (it receives the folder being built, renamed into place after).</param>
    public static void Write(LlamaConfig config, IReadOnlyList<(string Name, Tensor Tensor)> weights, string outDir, ScalarType dtype,
        ITextTokenizer? tokenizer, IChatTemplate? template, Action<string>? writeExtraFiles = null) =>
        HfCheckpoint.Save(config, weights, outDir, dtype, writeExtraFiles: dir =>
        {
            tokenizer?.SaveHfFiles(dir, template?.ToJinja());
            if (template is not null) ChatTemplateStore.Write(dir, template);
            writeExtraFiles?.Invoke(dir);
        });
}
