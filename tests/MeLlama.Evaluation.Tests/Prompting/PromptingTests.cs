using MeLlama.Evaluation.Prompting;
using MeLlama.Evaluation.Tasks;

namespace MeLlama.Evaluation.Tests.Prompting;

public class PromptingTests
{
    static EvalItem Item(string id, string question, string gold) =>
        new(id, new Dictionary<string, string> { ["id"] = id, ["question"] = question }, ["yes", "no", "maybe"], ["yes", "no", "maybe"], gold);

    static readonly List<EvalItem> Pool = Enumerable.Range(0, 30).Select(i => Item($"p{i}", $"question {i}?", i % 2 == 0 ? "yes" : "no")).ToList();

    static TaskDefinition Task => new()
    {
        Name = "toy", AnswerKind = AnswerKind.Choice,
        Dataset = new DatasetSpec { Format = DatasetFormat.Instruction, Test = "x" },
        Prompt = "Q: {question}\nA:", Target = " {gold}", Continuation = " {label}",
    };

    [Fact]
    public void Few_shot_draws_depend_only_on_seed_and_item_and_never_include_the_item()
    {
        var sampler = new FewShotSampler(Pool, seed: 7, "toy");
        var a = sampler.Sample(Pool[3], 5).Select(i => i.Id).ToList();
        // Other draws in between do not disturb the item's own draw (order independence, resumability).
        _ = sampler.Sample(Pool[4], 5);
        Assert.Equal(a, new FewShotSampler(Pool, 7, "toy").Sample(Pool[3], 5).Select(i => i.Id));
        Assert.Equal(5, a.Distinct().Count());
        Assert.DoesNotContain("p3", a);
        Assert.NotEqual(a, new FewShotSampler(Pool, 8, "toy").Sample(Pool[3], 5).Select(i => i.Id));
        for (int i = 0; i < Pool.Count; i++)
            Assert.DoesNotContain(Pool[i].Id, new FewShotSampler(Pool, 7, "toy").Sample(Pool[i], 29).Select(x => x.Id));
        Assert.Throws<InvalidOperationException>(() => sampler.Sample(Pool[0], 30));
    }

    [Fact]
    public void Context_puts_shots_with_answers_before_the_item_and_wraps_it()
    {
        var sampler = new FewShotSampler(Pool, 1, "toy");
        var item = Item("t1", "is it?", "maybe");
        var shots = sampler.Sample(item, 2);
        var plain = new PromptBuilder(Task, PromptFormat.Plain, 2, sampler).Context(item);
        Assert.Equal($"Q: {shots[0].Fields["question"]}\nA: {shots[0].Gold}\n\nQ: {shots[1].Fields["question"]}\nA: {shots[1].Gold}\n\nQ: is it?\nA:", plain);
        var chat = new PromptBuilder(Task, PromptFormat.MeLlama, 0, sampler).Context(item);
        Assert.Equal("Human: \nQ: is it?\nA:\n\nAssistant: \n", chat);
        // Continuations: " yes" after a plain prompt, "yes" after the chat wrapper's newline.
        Assert.Equal([" yes", " no", " maybe"], new PromptBuilder(Task, PromptFormat.Plain, 0, sampler).Continuations(item, plain));
        Assert.Equal(["yes", "no", "maybe"], new PromptBuilder(Task, PromptFormat.MeLlama, 0, sampler).Continuations(item, chat));
    }

    [Fact]
    public void Template_rejects_unknown_placeholders_and_keeps_escaped_braces()
    {
        var fields = new Dictionary<string, string> { ["a"] = "1" };
        Assert.Equal("{x} 1 }", PromptTemplate.Fill("{{x}} {a} }}", fields));
        var e = Assert.Throws<FormatException>(() => PromptTemplate.Fill("{question}", fields, "t.prompt"));
        Assert.Contains("{question}", e.Message);
        Assert.Contains("t.prompt", e.Message);
    }

    [Theory]
    [InlineData("B", "B")]
    [InlineData(" (C) because the nerve...", "C")]
    [InlineData("The answer is D.", "D")]
    [InlineData("Answer: option A", "A")]
    [InlineData("A patient like this needs option B", "B")]
    [InlineData("I think it is Metformin.", "C")]   // the option text, named once
    [InlineData("None of these", null)]
    [InlineData("", null)]
    public void Choice_parsing_for_letter_options(string output, string? expected)
    {
        string[] labels = ["A", "B", "C", "D"];
        string[] texts = ["Insulin", "Glipizide", "Metformin", "Acarbose"];
        Assert.Equal(expected, AnswerParser.Choice(output, labels, texts));
    }

    [Theory]
    [InlineData("Yes, the results show ...", "yes")]
    [InlineData("maybe. It is not clear whether yes or no", "maybe")]
    [InlineData("The answer: NO", "no")]
    [InlineData("Not known", null)]
    [InlineData("yesterday", null)]
    public void Choice_parsing_for_word_labels(string output, string? expected) =>
        Assert.Equal(expected, AnswerParser.Choice(output, ["yes", "no", "maybe"], ["yes", "no", "maybe"]));

    [Fact]
    public void Entity_and_relation_lines_are_parsed_and_normalised()
    {
        var entities = AnswerParser.Entities("Aspirin, TREATMENT\n  chest   pain , PROBLEM\nno comma here\n", @"^(?<span>.+),\s*(?<type>[^,]+)$");
        Assert.Equal(2, entities.Count);
        Assert.Contains(new MeLlama.Evaluation.Metrics.EntityMention("aspirin", "treatment"), entities);
        Assert.Contains(new MeLlama.Evaluation.Metrics.EntityMention("chest pain", "problem"), entities);
        var relations = AnswerParser.Relations("warfarin | aspirin | effect", @"^(?<head>.+?)\s*\|\s*(?<tail>.+?)\s*\|\s*(?<type>.+)$");
        Assert.Equal([new MeLlama.Evaluation.Metrics.RelationMention("warfarin", "aspirin", "effect")], relations);
        Assert.Equal(["x", "z"], AnswerParser.Labels("It shows X and also z.", ["x", "y", "z"]).Order());
    }
}
