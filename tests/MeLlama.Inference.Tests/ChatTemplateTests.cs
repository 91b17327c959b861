using System.Text.Json.Nodes;
using MeLlama.Inference.ChatTemplates;
using MeLlama.TestSupport;
using MeLlama.Tokenization;

namespace MeLlama.Inference.Tests;

public class ChatTemplateTests
{
    static readonly ChatMessage[] SingleTurn =
    [
        ChatMessage.User("Does aspirin reduce the risk of myocardial infarction?"),
        ChatMessage.Assistant("Yes. Low-dose aspirin lowers the risk in secondary prevention."),
    ];

    static string TextOf(IReadOnlyList<TemplateChunk> chunks) =>
        string.Concat(chunks.Select(c => c.Special switch { SpecialToken.Bos => "<s>", SpecialToken.Eos => "</s>", _ => c.Text }));

    [Fact]
    public void MeLlamaTemplateRendersHumanAssistantFormat()
    {
        var text = TextOf(ChatTemplateRegistry.MeLlamaTemplate.Render(SingleTurn));
        Assert.Equal("<s>Human: \nDoes aspirin reduce the risk of myocardial infarction?\n\nAssistant: \nYes. Low-dose aspirin lowers the risk in secondary prevention.</s>", text);
        var prompt = TextOf(ChatTemplateRegistry.MeLlamaTemplate.Render(SingleTurn[..1]));
        Assert.Equal("<s>Human: \nDoes aspirin reduce the risk of myocardial infarction?\n\nAssistant: \n", prompt);
    }

    [SkippableFact]
    public void Llama2ChatIdsMatchMetaReferenceConstruction()
    {
        var tok = TestModels.LlamaTokenizer();
        var dialog = new[]
        {
            ChatMessage.System("You are a careful clinician."),
            ChatMessage.User("  What is the first-line drug for type 2 diabetes? "),
            ChatMessage.Assistant("Metformin, unless contraindicated."),
            ChatMessage.User("And if eGFR is below 30?"),
        };
        // Meta's llama/generation.py chat_completion, written out by hand:
        // the system prompt folds into the first user message; each closed turn is encode(f"[INST] {u} [/INST] {a} ", bos, eos);
        // the open turn is encode(f"[INST] {u} [/INST]", bos).
        string first = ("<<SYS>>\nYou are a careful clinician.\n<</SYS>>\n\n" + dialog[1].Content).Trim();
        var expected = new List<int>();
        expected.AddRange(tok.Encode($"[INST] {first} [/INST] {dialog[2].Content.Trim()} ", addBos: true, addEos: true));
        expected.AddRange(tok.Encode($"[INST] {dialog[3].Content.Trim()} [/INST]", addBos: true));

        var encoded = ChatEncoder.Encode(ChatTemplateRegistry.Llama2Chat, tok, dialog, forGeneration: true);
        Assert.Equal(expected, encoded.Ids);
        Assert.Equal(2, encoded.Ids.Count(id => id == tok.BosId));
    }

    [SkippableFact]
    public void TrainableTokensAreExactlyTheAnswerAndItsEos()
    {
        var tok = TestModels.LlamaTokenizer();
        foreach (var template in new IChatTemplate[] { ChatTemplateRegistry.MeLlamaTemplate, ChatTemplateRegistry.Llama2Chat, ChatTemplateRegistry.NoneTemplate })
        {
            var encoded = ChatEncoder.Encode(template, tok, SingleTurn, forGeneration: false);
            var prompt = ChatEncoder.EncodePrompt(template, tok, SingleTurn[..1]);
            // The generation prompt is exactly the untrained prefix of the training sequence.
            int firstTrainable = Array.IndexOf(encoded.Trainable, true);
            Assert.Equal(prompt, encoded.Ids[..firstTrainable]);
            Assert.All(encoded.Trainable[firstTrainable..], Assert.True);
            Assert.Equal(tok.EosId, encoded.Ids[^1]);
            string answer = tok.Decode(encoded.Ids[firstTrainable..^1]);
            Assert.Equal(SingleTurn[1].Content, answer.Trim());
        }
    }

    [SkippableFact]
    public void MultiTurnMasksEveryAssistantTurnAndNothingElse()
    {
        var tok = TestModels.LlamaTokenizer();
        var dialog = new[]
        {
            ChatMessage.User("Define tachycardia."), ChatMessage.Assistant("A resting heart rate above 100 beats per minute."),
            ChatMessage.User("And bradycardia?"), ChatMessage.Assistant("Below 60 beats per minute."),
        };
        foreach (var template in new IChatTemplate[] { ChatTemplateRegistry.MeLlamaTemplate, ChatTemplateRegistry.Llama2Chat })
        {
            var encoded = ChatEncoder.Encode(template, tok, dialog, forGeneration: false);
            // Split the trainable tokens into contiguous runs: one per assistant turn, each ending with EOS.
            var runs = new List<int[]>();
            for (int i = 0; i < encoded.Length; i++)
            {
                if (!encoded.Trainable[i]) continue;
                int j = i;
                while (j < encoded.Length && encoded.Trainable[j]) j++;
                runs.Add(encoded.Ids[i..j]);
                i = j;
            }
            Assert.Equal(2, runs.Count);
            Assert.Equal(dialog[1].Content, tok.Decode(runs[0][..^1]).Trim());
            Assert.Equal(dialog[3].Content, tok.Decode(runs[1][..^1]).Trim());
            Assert.All(runs, r => Assert.Equal(tok.EosId, r[^1]));
        }
    }

    [Fact]
    public void CustomTemplateFromJsonRendersAndRoundTrips()
    {
        var json = JsonNode.Parse("""{"name": "qa", "user_format": "### Question:\n{content}\n### Answer:\n", "assistant_format": "{content}\n", "system_format": "{system}\n", "bos": "per_turn"}""");
        var template = ChatTemplateRegistry.FromJson(json, "test");
        var text = TextOf(template.Render([ChatMessage.System("Be brief."), .. SingleTurn, ChatMessage.User("Why?")]));
        Assert.Equal("<s>Be brief.\n### Question:\nDoes aspirin reduce the risk of myocardial infarction?\n### Answer:\nYes. Low-dose aspirin lowers the risk in secondary prevention.\n</s><s>### Question:\nWhy?\n### Answer:\n", text);

        var again = ChatTemplateRegistry.FromJson(template.ToJson(), "round trip");
        Assert.Equal(TextOf(template.Render(SingleTurn)), TextOf(again.Render(SingleTurn)));
        Assert.Equal("qa", again.Id);
    }

    [Fact]
    public void BadCustomTemplatesAreRejectedWithTheField()
    {
        var e = Assert.Throws<FormatException>(() => ChatTemplateRegistry.FromJson(JsonNode.Parse("""{"name": "x", "user_format": "no placeholder"}"""), "cfg.json"));
        Assert.Contains("user_format", e.Message);
        Assert.Contains("cfg.json", e.Message);
        e = Assert.Throws<FormatException>(() => ChatTemplateRegistry.FromJson(JsonNode.Parse("""{"name": "x", "user_format": "{content}", "extra": 1}"""), "cfg.json"));
        Assert.Contains("extra", e.Message);
        Assert.Throws<FormatException>(() => ChatTemplateRegistry.FromJson(JsonValue.Create("vicuna"), "cfg.json"));
    }

    [Fact]
    public void StoreWritesTemplateAndJinjaAndReadsItBack()
    {
        using var dir = new TempDir();
        foreach (var template in new IChatTemplate[] { ChatTemplateRegistry.MeLlamaTemplate, ChatTemplateRegistry.Llama2Chat,
                     new FormatChatTemplate("custom", "Q: {content}\nA:", " {content}") })
        {
            ChatTemplateStore.Write(dir.Path, template);
            var back = ChatTemplateStore.TryRead(dir.Path)!;
            Assert.Equal(template.Id, back.Id);
            Assert.Equal(TextOf(template.Render(SingleTurn)), TextOf(back.Render(SingleTurn)));
            var stored = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, ChatTemplateStore.FileName)))!;
            Assert.Equal(template.ToJinja(), stored["jinja"]!.GetValue<string>());
        }
        Assert.Null(ChatTemplateStore.TryRead(Path.Combine(dir.Path, "nowhere")));
    }

    [SkippableFact]
    public void JinjaTemplateLandsInTokenizerConfig()
    {
        var tok = TestModels.LlamaTokenizer();
        using var dir = new TempDir();
        tok.SaveHfFiles(dir.Path, ChatTemplateRegistry.Llama2Chat.ToJinja());
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, HfTokenizerFiles.TokenizerConfigFile)))!;
        string jinja = config["chat_template"]!.GetValue<string>();
        Assert.Contains("[INST]", jinja);
        Assert.Contains("<<SYS>>\\n", jinja);   // newline escaped inside the Jinja string literal
    }

    [Fact]
    public void ConversationShapeIsChecked()
    {
        Assert.Null(Conversation.Problem(SingleTurn, forGeneration: false));
        Assert.NotNull(Conversation.Problem(SingleTurn, forGeneration: true));
        Assert.NotNull(Conversation.Problem([ChatMessage.Assistant("hi")], forGeneration: false));
        Assert.NotNull(Conversation.Problem([ChatMessage.User("a"), ChatMessage.User("b")], forGeneration: true));
        Assert.NotNull(Conversation.Problem([ChatMessage.User("a"), ChatMessage.System("b"), ChatMessage.User("c")], forGeneration: true));
        Assert.Null(Conversation.Problem([ChatMessage.System("s"), ChatMessage.User("a")], forGeneration: true));
    }

    [SkippableFact]
    public void GenerationPicksTheFolderTemplateByDefaultAndAcceptsNamesAndFiles()
    {
        using var dir = new TempDir();
        // A model folder = the tiny fixture's files + a recorded template.
        string fixture = SharedData.Require(SharedData.TinyLlama);
        Directory.CreateDirectory(dir["model"]);
        foreach (var f in Directory.GetFiles(fixture)) File.Copy(f, Path.Combine(dir["model"], Path.GetFileName(f)));
        File.Copy(SharedData.Require(SharedData.LlamaTokenizer), dir["model/tokenizer.model"]);
        using (var bare = Generation.ModelFolder.Load(dir["model"]))
            Assert.Equal(ChatTemplateRegistry.None, bare.ResolveTemplate("auto").Id);
        ChatTemplateStore.Write(dir["model"], ChatTemplateRegistry.Llama2Chat);
        using var folder = Generation.ModelFolder.Load(dir["model"]);
        Assert.Equal(Llama2ChatTemplate.Name, folder.ResolveTemplate("auto").Id);
        Assert.Equal(ChatTemplateRegistry.MeLlama, folder.ResolveTemplate("melllama").Id);
        File.WriteAllText(dir["t.json"], """{"name": "qa", "user_format": "Q: {content}\nA:"}""");
        Assert.Equal("qa", folder.ResolveTemplate(dir["t.json"]).Id);
        Assert.Equal(Llama2ChatTemplate.Name, folder.ResolveTemplate(Path.Combine(dir["model"], ChatTemplateStore.FileName)).Id);
        Assert.Throws<ArgumentException>(() => folder.ResolveTemplate("vicuna"));
    }
}
