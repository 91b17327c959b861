using System.Text.Json;
using MeLlama.Core.IO;

namespace MeLlama.Tokenization;

/// <summary>What goes into tokenizer_config.json.</summary>
public sealed record HfTokenizerConfig(
    string TokenizerClass, string BosToken, string EosToken, string UnkToken,
    bool AddBosToken, bool AddEosToken, int ModelMaxLength, string? ChatTemplate,
    bool? Legacy = null, bool? AddPrefixSpace = null);

/// <summary>Writes the small JSON files Hugging Face transformers reads beside a tokenizer (atomically).</summary>
public static class HfTokenizerFiles
{
    public const string TokenizerConfigFile = "tokenizer_config.json";
    public const string SpecialTokensMapFile = "special_tokens_map.json";

    static readonly JsonWriterOptions Indented = new() { Indented = true };

    public static void WriteBytes(string directory, string name, ReadOnlySpan<byte> bytes) =>
        AtomicFile.WriteAllBytes(Path.Combine(directory, name), bytes);

    public static void WriteJson(string directory, string name, Action<Utf8JsonWriter> write) =>
        AtomicFile.Write(Path.Combine(directory, name), stream =>
        {
            using var writer = new Utf8JsonWriter(stream, Indented);
            write(writer);
            writer.Flush();
            stream.WriteByte((byte)'\n');
        });

    public static void WriteTokenizerConfig(string directory, HfTokenizerConfig config) =>
        WriteJson(directory, TokenizerConfigFile, w =>
        {
            w.WriteStartObject();
            w.WriteString("tokenizer_class", config.TokenizerClass);
            w.WriteBoolean("add_bos_token", config.AddBosToken);
            w.WriteBoolean("add_eos_token", config.AddEosToken);
            w.WriteString("bos_token", config.BosToken);
            w.WriteString("eos_token", config.EosToken);
            w.WriteString("unk_token", config.UnkToken);
            w.WriteNull("pad_token");
            w.WriteNumber("model_max_length", config.ModelMaxLength);
            w.WriteBoolean("clean_up_tokenization_spaces", false);
            if (config.Legacy is bool legacy) w.WriteBoolean("legacy", legacy);
            if (config.AddPrefixSpace is bool prefix) w.WriteBoolean("add_prefix_space", prefix);
            if (config.ChatTemplate is not null) w.WriteString("chat_template", config.ChatTemplate);
            w.WriteEndObject();
        });

    public static void WriteSpecialTokensMap(string directory, string bos, string eos, string unk) =>
        WriteJson(directory, SpecialTokensMapFile, w =>
        {
            w.WriteStartObject();
            w.WriteString("bos_token", bos);
            w.WriteString("eos_token", eos);
            w.WriteString("unk_token", unk);
            w.WriteEndObject();
        });
}
