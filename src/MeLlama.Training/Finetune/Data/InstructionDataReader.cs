using System.Text.Json;
using System.Text.Json.Nodes;
using MeLlama.Inference.ChatTemplates;

namespace MeLlama.Training.Finetune.Data;

/// <summary>Counts of one read: what was loaded, what was skipped and why (problems are generic, never record text).</summary>
public sealed class InstructionReadReport
{
    public int Loaded { get; internal set; }
    public int Skipped { get; internal set; }
    public Dictionary<InstructionFormat, int> Formats { get; } = [];
    /// <summary>Skipped records by problem.</summary>
    public Dictionary<string, int> SkippedBy { get; } = new(StringComparer.Ordinal);
    /// <summary>The first few skipped records as "file:line: problem".</summary>
    public List<string> Examples { get; } = [];
}

/// <summary>
/// Reads instruction data from JSON (a top-level array of records, or PubMedQA's object keyed by PMID in a .json file)
/// or JSON Lines, in the common shapes (<see cref="InstructionFormat"/>), detected per record. Every record must be a conversation that alternates user/assistant, starts with the user (after
/// an optional system message) and ends with the assistant; anything else is malformed and, by
/// <see cref="MalformedRecordPolicy"/>, either stops the read (naming file and line) or is skipped and counted.
/// </summary>
public static class InstructionDataReader
{
    const int MaxExamples = 5;

    public static IReadOnlyList<InstructionExample> Read(string path, MalformedRecordPolicy policy, out InstructionReadReport report)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"instruction data file {path} does not exist", path);
        var result = new List<InstructionExample>();
        var rep = new InstructionReadReport();
        byte[] bytes = File.ReadAllBytes(path);
        int start = bytes.Length >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF ? 3 : 0;
        int first = start;
        while (first < bytes.Length && bytes[first] is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n') first++;

        void Take(JsonNode? node, int line)
        {
            string source = $"{path}:{line}";
            if (TryConvert(node, source, out var example, out var problem))
            {
                result.Add(example!);
                rep.Loaded++;
                rep.Formats[example!.Format] = rep.Formats.GetValueOrDefault(example.Format) + 1;
                return;
            }
            if (policy == MalformedRecordPolicy.Error)
                throw new InvalidDataException($"{source}: {problem} (use skip for malformed records to skip and count such records)");
            rep.Skipped++;
            rep.SkippedBy[problem!] = rep.SkippedBy.GetValueOrDefault(problem!) + 1;
            if (rep.Examples.Count < MaxExamples) rep.Examples.Add($"{source}: {problem}");
        }

        if (first < bytes.Length && bytes[first] == (byte)'[') ReadArray(bytes, start, path, Take);
        else if (first < bytes.Length && bytes[first] == (byte)'{' && path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) ReadKeyedObject(bytes, start, path, Take);
        else ReadLines(bytes, start, path, policy, rep, Take);
        report = rep;
        return result;
    }

    static void ReadLines(byte[] bytes, int start, string path, MalformedRecordPolicy policy, InstructionReadReport rep, Action<JsonNode?, int> take)
    {
        int line = 0;
        for (int pos = start; pos < bytes.Length;)
        {
            int end = Array.IndexOf(bytes, (byte)'\n', pos);
            if (end < 0) end = bytes.Length;
            line++;
            var span = bytes.AsSpan(pos, end - pos);
            pos = end + 1;
            if (span.Trim(" \t\r"u8).IsEmpty) continue;
            JsonNode? node;
            try { node = JsonNode.Parse(span); }
            catch (JsonException e)
            {
                string problem = "not valid JSON";
                if (policy == MalformedRecordPolicy.Error) throw new InvalidDataException($"{path}:{line}: {problem} (at byte {e.BytePositionInLine})");
                rep.Skipped++;
                rep.SkippedBy[problem] = rep.SkippedBy.GetValueOrDefault(problem) + 1;
                if (rep.Examples.Count < MaxExamples) rep.Examples.Add($"{path}:{line}: {problem}");
                continue;
            }
            take(node, line);
        }
    }

    /// <summary>Line (1-based) of a byte offset.</summary>
    static Func<long, int> LineIndex(ReadOnlySpan<byte> data)
    {
        var lineStarts = new List<int> { 0 };
        for (int i = 0; i < data.Length; i++) if (data[i] == (byte)'\n') lineStarts.Add(i + 1);
        return offset =>
        {
            int index = lineStarts.BinarySearch((int)offset);
            return (index >= 0 ? index : ~index - 1) + 1;
        };
    }

    static void ReadArray(byte[] bytes, int start, string path, Action<JsonNode?, int> take)
    {
        var data = bytes.AsSpan(start);
        var LineOf = LineIndex(data);
        var reader = new Utf8JsonReader(data, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        try
        {
            reader.Read();   // [
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                int line = LineOf(reader.TokenStartIndex);
                var element = JsonElement.ParseValue(ref reader);
                take(element.ValueKind == JsonValueKind.Object ? JsonObject.Create(element) : JsonValue.Create(element), line);
            }
        }
        catch (JsonException e)
        {
            // The parser's own message may quote record text; report the position only.
            int line = e.LineNumber is { } l ? (int)l + 1 : LineOf(reader.TokenStartIndex);
            throw new InvalidDataException($"{path}:{line}: not valid JSON (at byte {e.BytePositionInLine} of the line)");
        }
    }

    /// <summary>A JSON object whose values are records (PubMedQA: keyed by PMID); each value is converted as a record.</summary>
    static void ReadKeyedObject(byte[] bytes, int start, string path, Action<JsonNode?, int> take)
    {
        var data = bytes.AsSpan(start);
        var LineOf = LineIndex(data);
        var reader = new Utf8JsonReader(data, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        try
        {
            reader.Read();   // {
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                reader.Read();
                int line = LineOf(reader.TokenStartIndex);
                var element = JsonElement.ParseValue(ref reader);
                take(element.ValueKind == JsonValueKind.Object ? JsonObject.Create(element) : JsonValue.Create(element), line);
            }
        }
        catch (JsonException e)
        {
            // The parser's own message may quote record text; report the position only.
            int line = e.LineNumber is { } l ? (int)l + 1 : LineOf(reader.TokenStartIndex);
            throw new InvalidDataException($"{path}:{line}: not valid JSON (at byte {e.BytePositionInLine} of the line)");
        }
    }

    /// <summary>Converts one parsed record; on failure <paramref name="problem"/> says what is wrong, without record text.</summary>
    public static bool TryConvert(JsonNode? node, string source, out InstructionExample? example, out string? problem)
    {
        example = null;
        problem = null;
        if (node is not JsonObject record) { problem = "record is not a JSON object"; return false; }
        var messages = new List<ChatMessage>();
        InstructionFormat format;
        try
        {
            string? system = OptionalString(record, "system");
            if (record.ContainsKey("conversations"))
            {
                format = InstructionFormat.ShareGpt;
                ReadTurns(record, "conversations", "from", "value", messages);
            }
            else if (record.ContainsKey("messages"))
            {
                format = InstructionFormat.Messages;
                ReadTurns(record, "messages", "role", "content", messages);
            }
            else if (record.ContainsKey("instruction"))
            {
                format = InstructionFormat.Alpaca;
                string instruction = RequiredString(record, "instruction");
                string input = OptionalString(record, "input") ?? "";
                string output = RequiredString(record, "output");
                messages.Add(ChatMessage.User(input.Trim().Length > 0 ? instruction + "\n\n" + input : instruction));
                messages.Add(ChatMessage.Assistant(output));
            }
            else if (PubMedQaInstructions.LooksLikePubMedQa(record))
            {
                format = InstructionFormat.PubMedQa;
                messages.AddRange(PubMedQaInstructions.Convert(record, out var pubmedProblem) ?? throw new RecordProblem(pubmedProblem!));
            }
            else if (record.ContainsKey("prompt"))
            {
                format = InstructionFormat.PromptCompletion;
                string prompt = RequiredString(record, "prompt");
                string completion = record.ContainsKey("completion") ? RequiredString(record, "completion")
                    : record.ContainsKey("response") ? RequiredString(record, "response")
                    : throw new RecordProblem("field \"completion\" (or \"response\") is missing");
                messages.Add(ChatMessage.User(prompt));
                messages.Add(ChatMessage.Assistant(completion));
            }
            else throw new RecordProblem("no known fields (expected conversations, messages, instruction+output, prompt+completion or PubMedQA QUESTION+LONG_ANSWER)");

            if (system is not null && (messages.Count == 0 || messages[0].Role != ChatRole.System))
                messages.Insert(0, ChatMessage.System(system));
        }
        catch (RecordProblem e)
        {
            problem = e.Message;
            return false;
        }
        if (Conversation.Problem(messages, forGeneration: false) is { } shape) { problem = shape; return false; }
        for (int i = 0; i < messages.Count; i++)
            if (messages[i].Role != ChatRole.System && messages[i].Content.Trim().Length == 0)
            {
                problem = $"{(messages[i].Role == ChatRole.User ? "user" : "assistant")} message is empty";
                return false;
            }
        example = new InstructionExample(messages, source, format);
        return true;
    }

    static void ReadTurns(JsonObject record, string listField, string roleField, string textField, List<ChatMessage> messages)
    {
        if (record[listField] is not JsonArray turns) throw new RecordProblem($"field \"{listField}\" must be a list");
        for (int i = 0; i < turns.Count; i++)
        {
            if (turns[i] is not JsonObject turn) throw new RecordProblem($"{listField}[{i}] is not an object");
            // Accept either naming inside a list (some ShareGPT exports use role/content).
            string? role = OptionalString(turn, roleField) ?? OptionalString(turn, roleField == "from" ? "role" : "from");
            string? text = OptionalString(turn, textField) ?? OptionalString(turn, textField == "value" ? "content" : "value");
            if (role is null) throw new RecordProblem($"{listField}[{i}].{roleField} is missing");
            if (text is null) throw new RecordProblem($"{listField}[{i}].{textField} is missing");
            messages.Add(new ChatMessage(ParseRole(role, $"{listField}[{i}].{roleField}"), text));
        }
    }

    static ChatRole ParseRole(string role, string field) => role.ToLowerInvariant() switch
    {
        "human" or "user" => ChatRole.User,
        "gpt" or "assistant" or "agent" or "bot" or "model" or "chatgpt" => ChatRole.Assistant,
        "system" => ChatRole.System,
        _ => throw new RecordProblem($"{field} \"{Truncate(role)}\" is not a known role (human/user, gpt/assistant/agent, system)"),
    };

    // Role names are schema, not clinical text, but keep them short in messages anyway.
    static string Truncate(string s) => s.Length <= 20 ? s : s[..20] + "…";

    static string RequiredString(JsonObject record, string field) =>
        OptionalString(record, field) ?? throw new RecordProblem($"field \"{field}\" is missing");

    static string? OptionalString(JsonObject record, string field)
    {
        var node = record[field];
        if (node is null || node.GetValueKind() == JsonValueKind.Null) return null;
        return node.GetValueKind() == JsonValueKind.String ? node.GetValue<string>() : throw new RecordProblem($"field \"{field}\" must be a string");
    }

    sealed class RecordProblem(string message) : Exception(message);
}
