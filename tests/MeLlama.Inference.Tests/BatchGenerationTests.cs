using System.Text.Json.Nodes;
using MeLlama.Inference.ChatTemplates;
using MeLlama.Inference.Generation;
using MeLlama.TestSupport;

namespace MeLlama.Inference.Tests;

public class BatchGenerationTests
{
    [SkippableFact]
    public void EveryRecordGetsTheSameCompletionAsASingleGenerationAndKeepsItsFields()
    {
        var tok = TestModels.LlamaTokenizer();
        using var model = TestModels.TinyLlama();
        using var dir = new TempDir();
        File.WriteAllLines(dir["in.jsonl"],
        [
            """{"id": 7, "prompt": "Is aspirin an NSAID?", "meta": {"split": "test"}}""",
            "",
            """{"id": 8, "instruction": "Name the drug class.", "input": "Atorvastatin", "system": "Be brief."}""",
            """{"id": 9, "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Define fever."}, {"role": "assistant", "content": "reference answer"}]}""",
        ]);
        var items = BatchGeneration.ReadInput(dir["in.jsonl"]);
        Assert.Equal([1, 3, 4], items.Select(i => i.Line));
        Assert.Equal(3, items[2].Messages.Count);   // the reference answer is left out
        Assert.Equal(ChatMessage.System("Be brief."), items[1].Messages[0]);

        var generator = new TextGenerator(model, tok);
        var options = new GenerationOptions { MaxNewTokens = 12 };
        var writer = new StringWriter();
        var summary = BatchGeneration.Run(items, generator, ChatTemplateRegistry.Llama2Chat, options, writer);
        Assert.Equal(3, summary.Records);
        var lines = writer.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        Assert.Equal([7, 8, 9], lines.Select(l => l["id"]!.GetValue<int>()));
        Assert.Equal("test", lines[0]["meta"]!["split"]!.GetValue<string>());
        for (int i = 0; i < 3; i++)
        {
            var single = generator.Generate(ChatEncoder.EncodePrompt(ChatTemplateRegistry.Llama2Chat, tok, items[i].Messages), options);
            Assert.Equal(single.Text, lines[i]["completion"]!.GetValue<string>());
        }
    }

    [Fact]
    public void BadRecordsNameTheirLineAndField()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir["a.jsonl"], ["""{"prompt": "ok"}""", """{"question": "?"}"""]);
        var e = Assert.Throws<InvalidDataException>(() => BatchGeneration.ReadInput(dir["a.jsonl"]));
        Assert.StartsWith(dir["a.jsonl"] + ":2: ", e.Message);
        File.WriteAllLines(dir["b.jsonl"], ["""{"prompt": "ok", "completion": "already"}"""]);
        Assert.Contains("completion", Assert.Throws<InvalidDataException>(() => BatchGeneration.ReadInput(dir["b.jsonl"])).Message);
        File.WriteAllLines(dir["c.jsonl"], ["{\"prompt\": \"secret patient text"]);
        e = Assert.Throws<InvalidDataException>(() => BatchGeneration.ReadInput(dir["c.jsonl"]));
        Assert.DoesNotContain("secret", e.Message);
        File.WriteAllLines(dir["d.jsonl"], ["""{"messages": [{"role": "assistant", "content": "x"}]}"""]);
        Assert.StartsWith(dir["d.jsonl"] + ":1: ", Assert.Throws<InvalidDataException>(() => BatchGeneration.ReadInput(dir["d.jsonl"])).Message);
    }
}
