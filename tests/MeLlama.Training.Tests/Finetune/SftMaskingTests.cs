using MeLlama.Inference.ChatTemplates;
using MeLlama.Model;
using MeLlama.Training.Finetune.Data;
using MeLlama.Training.Finetune.Engine;
using static TorchSharp.torch;

namespace MeLlama.Training.Tests.Finetune;

public class SftMaskingTests
{
    public SftMaskingTests() => FinetuneTestSupport.SingleThread();

    const string Question = "Is metformin associated with lactic acidosis in patients with normal renal function?";
    const string Answer = "No. In patients with normal renal function the risk is very low.";

    static InstructionExample Example(string question = Question, string answer = Answer) =>
        new([ChatMessage.User(question), ChatMessage.Assistant(answer)], "test:1", InstructionFormat.Alpaca);

    [SkippableFact]
    public void LossCountsExactlyTheAssistantTokensOfAKnownExample()
    {
        var tok = FinetuneTestSupport.LlamaTokenizer();
        var dataset = SftDataset.Build([Example()], ChatTemplateRegistry.MeLlamaTemplate, tok, new SftOptions { SeqLen = 63, Pack = false });
        var row = Assert.Single(dataset.Rows);

        // Independently: the rendered prompt and the full text, encoded whole (BOS/EOS added by id).
        string prompt = $"Human: \n{Question}\n\nAssistant: \n";
        int[] promptIds = tok.Encode(prompt, addBos: true);
        int[] fullIds = tok.Encode(prompt + Answer, addBos: true, addEos: true);
        int answerTokens = fullIds.Length - promptIds.Length;   // answer pieces + EOS
        Assert.Equal(fullIds, row[..fullIds.Length].Select(SftRows.TokenId));

        using var batch = tensor(row, [1, row.Length]);
        var (inputs, labels) = SftRows.Split(batch);
        var labelArray = labels.data<long>().ToArray();
        var counted = labelArray.Where(l => l != SftRows.IgnoreIndex).ToArray();
        Assert.Equal(answerTokens, counted.Length);
        Assert.Equal(fullIds[promptIds.Length..], counted.Select(l => (int)l));
        Assert.Equal(Answer, tok.Decode(counted[..^1].Select(l => (int)l).ToArray()));
        Assert.Equal(tok.EosId, (int)counted[^1]);
        Assert.Equal(answerTokens, dataset.Stats.TargetTokens);
        Assert.Equal(63 + 1 - fullIds.Length, dataset.Stats.PaddingTokens);

        // The loss is the mean NLL over exactly those positions (checked against log_softmax + gather by hand).
        using var model = new LlamaForCausalLM(FinetuneTestSupport.SmallConfig(vocab: tok.VocabSize) with { MaxPositionEmbeddings = 64 }, seed: 3);
        using var _ = no_grad();
        var logits = model.forward(inputs);
        double loss = SftTrainStep.SumNll(logits, labels).item<float>() / counted.Length;
        var logProbs = logits.log_softmax(-1)[0];
        double manual = 0;
        for (int position = 0; position < labelArray.Length; position++)
            if (labelArray[position] != SftRows.IgnoreIndex) manual -= logProbs[position, labelArray[position]].item<float>();
        Assert.Equal(manual / counted.Length, loss, 4);
    }

    [SkippableFact]
    public void PackingKeepsExamplesWholeAndNeverTrainsAcrossThem()
    {
        var tok = FinetuneTestSupport.LlamaTokenizer();
        var examples = Enumerable.Range(0, 6).Select(i => Example($"Question number {i}: is this drug safe?", $"Answer {i}: probably yes.")).ToList();
        var packed = SftDataset.Build(examples, ChatTemplateRegistry.Llama2Chat, tok, new SftOptions { SeqLen = 80 });
        var padded = SftDataset.Build(examples, ChatTemplateRegistry.Llama2Chat, tok, new SftOptions { SeqLen = 80, Pack = false });
        Assert.Equal(6, padded.Stats.Rows);
        Assert.True(packed.Stats.Rows < padded.Stats.Rows);
        Assert.Equal(padded.Stats.TargetTokens, packed.Stats.TargetTokens);
        foreach (var row in packed.Rows)
        {
            Assert.Equal(81, row.Length);
            // Every BOS (an example start) is input only, and the row starts with one.
            Assert.Equal(tok.BosId, SftRows.TokenId(row[0]));
            for (int i = 0; i < row.Length; i++)
                if (SftRows.TokenId(row[i]) == tok.BosId) Assert.False(SftRows.IsTarget(row[i]));
        }
    }

    [SkippableFact]
    public void OverlongExamplesFollowTheTruncationRule()
    {
        var tok = FinetuneTestSupport.LlamaTokenizer();
        string longContext = string.Join(" ", Enumerable.Repeat("The cohort included adults with chronic kidney disease.", 12));
        string shortAnswer = "Yes, the association held after adjustment.";
        string longAnswer = string.Join(" ", Enumerable.Repeat("Outcomes improved in the treated group.", 12));
        var options = new SftOptions { SeqLen = 63, Pack = false, MinPromptTokens = 16, MinResponseTokens = 24 };
        var template = ChatRegistry();

        // Long prompt, short answer: the prompt loses its start; BOS, the end of the question and the whole answer stay.
        var a = SftDataset.Build([Example(longContext + " Does treatment help?", shortAnswer)], template, tok, options);
        Assert.Equal(1, a.Stats.PromptTruncated);
        var rowA = a.Rows[0].Select(SftRows.TokenId).ToArray();
        Assert.Equal(tok.BosId, rowA[0]);
        var targetsA = a.Rows[0].Where(SftRows.IsTarget).Select(SftRows.TokenId).ToArray();
        Assert.Equal(shortAnswer, tok.Decode(targetsA[..^1]));
        Assert.Contains("Does treatment help?\n\nAssistant:", tok.Decode(rowA));

        // Long answer: the prompt keeps MinPromptTokens, the answer is cut on the right (no EOS).
        var b = SftDataset.Build([Example("Summarise the outcomes.", longAnswer)], template, tok, options);
        Assert.Equal(1, b.Stats.ResponseTruncated);
        var targetsB = b.Rows[0].Where(SftRows.IsTarget).Select(SftRows.TokenId).ToArray();
        Assert.NotEqual(tok.EosId, targetsB[^1]);
        Assert.StartsWith(tok.Decode(targetsB), longAnswer);
        Assert.True(targetsB.Length >= 24);

        // Too little room for MinResponseTokens: dropped and counted.
        var c = SftDataset.Build([Example(longContext, longAnswer)], template, tok, options with { MinPromptTokens = 50 });
        Assert.Equal(1, c.Stats.Dropped);
        Assert.Empty(c.Rows);
    }

    static IChatTemplate ChatRegistry() => ChatTemplateRegistry.MeLlamaTemplate;
}
