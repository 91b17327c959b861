using System.Text.Json.Nodes;

namespace MeLlama.Inference.ChatTemplates;

/// <summary>
/// Meta's LLaMA-2 chat format, as its reference <c>chat_completion</c> builds it: every user/assistant pair is
/// <c>&lt;s&gt;[INST] {user} [/INST] {answer} &lt;/s&gt;</c> (BOS and EOS per turn, contents stripped), the last
/// user message <c>&lt;s&gt;[INST] {user} [/INST]</c>; a system message is folded into the first user message
/// as <c>&lt;&lt;SYS&gt;&gt;\n{system}\n&lt;&lt;/SYS&gt;&gt;\n\n</c>.
/// </summary>
public sealed class Llama2ChatTemplate : IChatTemplate
{
    public const string Name = "llama2-chat";
    const string BInst = "[INST]", EInst = "[/INST]", BSys = "<<SYS>>\n", ESys = "\n<</SYS>>\n\n";

    public string Id => Name;

    public IReadOnlyList<TemplateChunk> Render(IReadOnlyList<ChatMessage> messages)
    {
        var chunks = new List<TemplateChunk>();
        int start = messages.Count > 0 && messages[0].Role == ChatRole.System ? 1 : 0;
        for (int i = start; i < messages.Count; i += 2)
        {
            string user = messages[i].Content;
            if (i == start && start == 1) user = BSys + messages[0].Content + ESys + user;
            chunks.Add(TemplateChunk.Bos);
            chunks.Add(TemplateChunk.Prompt($"{BInst} {user.Trim()} {EInst}"));
            if (i + 1 >= messages.Count) break;
            chunks.Add(TemplateChunk.Answer($" {messages[i + 1].Content.Trim()} "));
            chunks.Add(TemplateChunk.Eos(trainable: true));
        }
        return chunks;
    }

    public string ToJinja() =>
        "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}{% set loop_messages = messages[1:] %}" +
        "{% else %}{% set system_message = none %}{% set loop_messages = messages %}{% endif %}" +
        "{% for message in loop_messages %}" +
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
        "{% if loop.index0 == 0 and system_message is not none %}{% set content = " + JinjaText.Literal(BSys) + " + system_message + " + JinjaText.Literal(ESys) + " + message['content'] %}" +
        "{% else %}{% set content = message['content'] %}{% endif %}" +
        "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}" +
        "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}" +
        "{% endfor %}";

    public JsonObject ToJson() => new() { ["id"] = Name };
}
