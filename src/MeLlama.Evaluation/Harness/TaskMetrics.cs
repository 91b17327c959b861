using MeLlama.Evaluation.Metrics;
using MeLlama.Evaluation.Prompting;
using MeLlama.Evaluation.Tasks;

namespace MeLlama.Evaluation.Harness;

/// <summary>
/// Computes a task's metrics from its items and their predictions (aligned lists), each with a percentile
/// bootstrap interval over items. Macro-F1 averages over the labels present in gold or predictions (sklearn's
/// default). Metric names: accuracy, macro_f1 (+ accuracy_norm, macro_f1_norm from
/// length-normalised log-likelihoods); micro_f1/macro_f1 for multi-label; entity_f1, entity_precision,
/// entity_recall, entity_macro_f1; relation_f1, relation_precision, relation_recall; exact_match, token_f1;
/// rouge1, rouge2, rougeL (F-measure means).
/// </summary>
public static class TaskMetrics
{
    public static IReadOnlyList<MetricValue> Compute(TaskDefinition task, IReadOnlyList<EvalItem> items, IReadOnlyList<PredictionRecord> predictions, EvalSettings settings)
    {
        if (items.Count != predictions.Count) throw new ArgumentException("items and predictions must align");
        var metrics = new List<MetricValue>();
        void Add(string name, Func<int[], double> metric, ulong salt)
        {
            var ci = Bootstrap.Percentile(items.Count, metric, settings.BootstrapResamples, settings.Seed ^ salt, settings.ConfidenceLevel);
            metrics.Add(new MetricValue(name, ci.Value, ci.Resamples > 0 ? ci.Lower : null, ci.Resamples > 0 ? ci.Upper : null));
        }

        switch (task.AnswerKind)
        {
            case AnswerKind.Choice:
            {
                var labels = ChoiceLabels(task, items);
                var gold = items.Select(i => i.Gold).ToArray();
                var pred = predictions.Select(p => p.Prediction).ToArray();
                Add("accuracy", idx => Classification.Accuracy(Pick(gold, idx), Pick(pred, idx)), 1);
                Add("macro_f1", idx => MacroF1(Pick(gold, idx), Pick(pred, idx), labels), 2);
                if (predictions.Any(p => p.LogLikelihoods != null))
                {
                    var norm = predictions.Select(p => p.PredictionNorm).ToArray();
                    Add("accuracy_norm", idx => Classification.Accuracy(Pick(gold, idx), Pick(norm, idx)), 3);
                    Add("macro_f1_norm", idx => MacroF1(Pick(gold, idx), Pick(norm, idx), labels), 4);
                }
                break;
            }
            case AnswerKind.MultiLabel:
            {
                var labels = ChoiceLabels(task, items);
                var gold = items.Select(i => (IReadOnlySet<string>)i.Gold.Split("; ", StringSplitOptions.RemoveEmptyEntries).ToHashSet()).ToArray();
                var pred = predictions.Select(p => AnswerParser.Labels(p.Output ?? "", labels)).ToArray();
                Add("macro_f1", idx => labels.Average(l => SetF1.Micro(
                    Pick(gold, idx).Select(s => Only(s, l)).ToList(), Pick(pred, idx).Select(s => Only(s, l)).ToList()).F1), 5);
                Add("micro_f1", idx => SetF1.Micro(Pick(gold, idx), Pick(pred, idx)).F1, 6);
                break;
            }
            case AnswerKind.Entities:
            {
                var gold = items.Select(i => AnswerParser.Entities(i.Gold, task.LinePattern!)).ToArray();
                var pred = predictions.Select(p => AnswerParser.Entities(p.Output ?? "", task.LinePattern!)).ToArray();
                Add("entity_f1", idx => SetF1.Micro(Pick(gold, idx), Pick(pred, idx)).F1, 7);
                Add("entity_precision", idx => SetF1.Micro(Pick(gold, idx), Pick(pred, idx)).Precision, 8);
                Add("entity_recall", idx => SetF1.Micro(Pick(gold, idx), Pick(pred, idx)).Recall, 9);
                Add("entity_macro_f1", idx => SetF1.MacroOverTypes(Pick(gold, idx), Pick(pred, idx)), 10);
                break;
            }
            case AnswerKind.Relations:
            {
                var gold = items.Select(i => AnswerParser.Relations(i.Gold, task.LinePattern!)).ToArray();
                var pred = predictions.Select(p => AnswerParser.Relations(p.Output ?? "", task.LinePattern!)).ToArray();
                Add("relation_f1", idx => SetF1.Micro(Pick(gold, idx), Pick(pred, idx)).F1, 11);
                Add("relation_precision", idx => SetF1.Micro(Pick(gold, idx), Pick(pred, idx)).Precision, 12);
                Add("relation_recall", idx => SetF1.Micro(Pick(gold, idx), Pick(pred, idx)).Recall, 13);
                break;
            }
            case AnswerKind.Extractive:
            {
                var em = items.Select((it, i) => TokenF1.ExactMatch(it.Gold, AnswerParser.FirstLine(predictions[i].Output ?? "")) ? 1.0 : 0.0).ToArray();
                var f1 = items.Select((it, i) => TokenF1.F1(it.Gold, AnswerParser.FirstLine(predictions[i].Output ?? ""))).ToArray();
                Add("exact_match", idx => Mean(em, idx), 14);
                Add("token_f1", idx => Mean(f1, idx), 15);
                break;
            }
            case AnswerKind.Summary:
            {
                var scorer = new RougeScorer(task.RougeStemmer);
                var scores = items.Select((it, i) => scorer.Score(it.Gold, predictions[i].Output ?? "")).ToArray();
                var r1 = scores.Select(s => s.Rouge1.F1).ToArray();
                var r2 = scores.Select(s => s.Rouge2.F1).ToArray();
                var rl = scores.Select(s => s.RougeL.F1).ToArray();
                Add("rouge1", idx => Mean(r1, idx), 16);
                Add("rouge2", idx => Mean(r2, idx), 17);
                Add("rougeL", idx => Mean(rl, idx), 18);
                break;
            }
        }
        return metrics;
    }

    /// <summary>Metrics the Me-LLaMA paper reports for this kind of task that we do not compute.</summary>
    public static IReadOnlyDictionary<string, string> NotImplemented(TaskDefinition task) => task.AnswerKind == AnswerKind.Summary
        ? new Dictionary<string, string> { ["bertscore"] = "not implemented: BERTScore needs a BERT model (the paper's numbers use one), which is not available offline here" }
        : new Dictionary<string, string>();

    /// <summary>The task's label set: its fixed labels, else every choice label in order of first appearance.</summary>
    public static IReadOnlyList<string> ChoiceLabels(TaskDefinition task, IReadOnlyList<EvalItem> items) =>
        task.Labels ?? items.SelectMany(i => i.ChoiceLabels).Distinct(StringComparer.Ordinal).ToList();

    /// <summary>Macro-F1 over the task's labels that occur in gold or predictions (sklearn's default set).</summary>
    static double MacroF1(List<string> gold, List<string?> pred, IReadOnlyList<string> labels)
    {
        var present = Classification.PresentLabels(gold, pred, labels);
        return present.Count == 0 ? 0 : Classification.MacroF1(gold, pred, present).MacroF1;
    }

    static List<T> Pick<T>(T[] values, int[] idx)
    {
        var list = new List<T>(idx.Length);
        foreach (int i in idx) list.Add(values[i]);
        return list;
    }

    static IReadOnlySet<string> Only(IReadOnlySet<string> set, string label) =>
        set.Contains(label) ? new HashSet<string> { label } : new HashSet<string>();

    static double Mean(double[] values, int[] idx)
    {
        if (idx.Length == 0) return 0;
        double sum = 0;
        foreach (int i in idx) sum += values[i];
        return sum / idx.Length;
    }
}
