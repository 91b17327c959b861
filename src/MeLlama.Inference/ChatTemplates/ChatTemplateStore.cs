using System.Text.Json;
using System.Text.Json.Nodes;
using MeLlama.Core.IO;

namespace MeLlama.Inference.ChatTemplates;

/// <summary>
/// Records a model's chat template in its folder, so nobody has to guess it: our own small JSON
/// (<see cref="FileName"/>, read back by generate/chat without a Jinja engine) beside the Jinja text that the
/// tokenizer files carry for Hugging Face (tokenizer_config.json "chat_template", written by
/// <c>ITextTokenizer.SaveHfFiles(dir, template.ToJinja())</c>).
/// </summary>
public static class ChatTemplateStore
{
    public const string FileName = "mellama_chat_template.json";

    public static void Write(string modelDir, IChatTemplate template)
    {
        var root = new JsonObject
        {
            ["template"] = template.ToJson(),
            ["jinja"] = template.ToJinja(),
        };
        AtomicFile.WriteAllText(Path.Combine(modelDir, FileName), root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    /// <summary>The template stored in <paramref name="modelDir"/>, or null when the folder records none.</summary>
    public static IChatTemplate? TryRead(string modelDir)
    {
        string path = Path.Combine(modelDir, FileName);
        if (!File.Exists(path)) return null;
        JsonNode? root;
        try { root = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON ({e.Message})", e); }
        try { return ChatTemplateRegistry.FromJson(root?["template"], path); }
        catch (FormatException e) { throw new InvalidDataException(e.Message, e); }
    }
}
