using MeLlama.Inference.ChatTemplates;
using MeLlama.TestSupport;
using MeLlama.Training.Finetune.Data;

namespace MeLlama.Training.Tests.Finetune;

public class InstructionDataReaderTests
{
    [Fact]
    public void ReadsEveryShapeFromJsonLines()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir["data.jsonl"],
        [
            """{"instruction": "Classify the finding.", "input": "Mild cardiomegaly.", "output": "Cardiac."}""",
            """{"instruction": "Name a beta blocker.", "input": "", "output": "Metoprolol."}""",
            "",
            """{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}, {"from": "human", "value": "Define sepsis."}, {"from": "agent", "value": "Organ dysfunction from infection."}]}""",
            """{"system": "Be brief.", "messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}""",
            """{"prompt": "Question: is X safe?\nAnswer:", "completion": " yes"}""",
        ]);
        var examples = InstructionDataReader.Read(dir["data.jsonl"], MalformedRecordPolicy.Error, out var report);
        Assert.Equal(5, report.Loaded);
        Assert.Equal(0, report.Skipped);
        Assert.Equal([ChatMessage.User("Classify the finding.\n\nMild cardiomegaly."), ChatMessage.Assistant("Cardiac.")], examples[0].Messages);
        Assert.Equal([ChatMessage.User("Name a beta blocker."), ChatMessage.Assistant("Metoprolol.")], examples[1].Messages);
        Assert.Equal(4, examples[2].Messages.Count);
        Assert.Equal(ChatRole.Assistant, examples[2].Messages[3].Role);
        Assert.Equal(InstructionFormat.ShareGpt, examples[2].Format);
        Assert.Equal(dir["data.jsonl"] + ":4", examples[2].Source);
        Assert.Equal(ChatMessage.System("Be brief."), examples[3].Messages[0]);
        Assert.Equal(InstructionFormat.PromptCompletion, examples[4].Format);
        Assert.Equal(" yes", examples[4].Messages[1].Content);
    }

    [Fact]
    public void JsonArrayRecordsKnowTheirLines()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["data.json"], """
            [
              {"instruction": "a", "output": "b"},
              {
                "instruction": "c",
                "output": 5
              }
            ]
            """);
        var e = Assert.Throws<InvalidDataException>(() => InstructionDataReader.Read(dir["data.json"], MalformedRecordPolicy.Error, out _));
        Assert.StartsWith(dir["data.json"] + ":3: ", e.Message);
        Assert.Contains("\"output\" must be a string", e.Message);
    }

    [Fact]
    public void MalformedRecordsAreErrorsWithFileAndLineOrSkippedAndCounted()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir["bad.jsonl"],
        [
            """{"instruction": "ok", "output": "fine"}""",
            """{"instruction": "no output"}""",
            """{"conversations": [{"from": "gpt", "value": "starts with the model"}, {"from": "human", "value": "?"}]}""",
            """not json at all""",
            """{"conversations": [{"from": "human", "value": "only a question"}]}""",
            """{"text": "pretraining text"}""",
            """{"conversations": [{"from": "doctor", "value": "?"}, {"from": "gpt", "value": "!"}]}""",
            """{"instruction": "empty answer", "output": "  "}""",
        ]);
        var e = Assert.Throws<InvalidDataException>(() => InstructionDataReader.Read(dir["bad.jsonl"], MalformedRecordPolicy.Error, out _));
        Assert.StartsWith(dir["bad.jsonl"] + ":2: ", e.Message);
        Assert.Contains("\"output\" is missing", e.Message);

        var examples = InstructionDataReader.Read(dir["bad.jsonl"], MalformedRecordPolicy.Skip, out var report);
        Assert.Single(examples);
        Assert.Equal(7, report.Skipped);
        Assert.Equal(7, report.SkippedBy.Values.Sum());
        Assert.Equal(1, report.SkippedBy["not valid JSON"]);
        Assert.Contains(report.Examples, x => x.StartsWith(dir["bad.jsonl"] + ":3: ", StringComparison.Ordinal));
        // Problems describe structure, never the record's text.
        Assert.DoesNotContain(report.SkippedBy.Keys, k => k.Contains("starts with the model") || k.Contains("only a question"));
    }
}
