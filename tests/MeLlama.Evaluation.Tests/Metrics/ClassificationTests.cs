using MeLlama.Evaluation.Metrics;

namespace MeLlama.Evaluation.Tests.Metrics;

public class ClassificationTests
{
    static readonly string[] Labels = ["yes", "no", "maybe"];

    [Fact]
    public void Accuracy_counts_unparsed_predictions_as_wrong()
    {
        string[] gold = ["yes", "no", "maybe", "yes", "no"];
        string?[] pred = ["yes", "yes", "maybe", "no", null];
        // correct: items 0 and 2 -> 2/5
        Assert.Equal(0.4, Classification.Accuracy(gold, pred), 12);
    }

    [Fact]
    public void MacroF1_gives_zero_to_a_class_that_is_never_predicted()
    {
        string[] gold = ["yes", "yes", "no", "no", "maybe"];
        string?[] pred = ["yes", "no", "no", "yes", "yes"];
        var result = Classification.MacroF1(gold, pred, Labels);
        // yes: tp 1, predicted 3, gold 2 -> P 1/3, R 1/2, F1 2/5
        Assert.Equal(1.0 / 3, result.PerClass["yes"].Precision, 12);
        Assert.Equal(0.5, result.PerClass["yes"].Recall, 12);
        Assert.Equal(0.4, result.PerClass["yes"].F1, 12);
        // no: tp 1, predicted 2, gold 2 -> F1 1/2
        Assert.Equal(0.5, result.PerClass["no"].F1, 12);
        // maybe: never predicted -> precision undefined -> 0, F1 0
        Assert.Equal(0, result.PerClass["maybe"].Precision);
        Assert.Equal(0, result.PerClass["maybe"].F1);
        Assert.Equal((0.4 + 0.5 + 0) / 3, result.MacroF1, 12);
    }

    [Fact]
    public void MacroF1_is_one_for_perfect_predictions_and_counts_unparsed_as_missed_recall()
    {
        string[] gold = ["yes", "no", "maybe"];
        Assert.Equal(1, Classification.MacroF1(gold, gold, Labels).MacroF1, 12);
        // One unparsed "maybe": maybe has tp 0 -> F1 0; yes and no stay perfect -> 2/3.
        Assert.Equal(2.0 / 3, Classification.MacroF1(gold, ["yes", "no", null], Labels).MacroF1, 12);
    }

    [Fact]
    public void Mismatched_lengths_are_rejected()
    {
        Assert.Throws<ArgumentException>(() => Classification.Accuracy(["a"], ["a", "b"]));
    }
}
