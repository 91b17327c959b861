using MeLlama.Evaluation.Tasks;

namespace MeLlama.Evaluation.Datasets;

/// <summary>Resolves a task's files against the data root, checks they exist, and reads them.</summary>
public static class TaskDataLoader
{
    public static string Resolve(string dataRoot, string path) =>
        Path.IsPathRooted(path) ? path : Path.GetFullPath(Path.Combine(dataRoot, path));

    public static TaskData Load(TaskDefinition task, string dataRoot)
    {
        var spec = task.Dataset;
        string test = Require(task, Resolve(dataRoot, spec.Test), ExpectedLayout(task));
        switch (spec.Format)
        {
            case DatasetFormat.PubMedQa:
            {
                string? ids = spec.TestIds == null ? null
                    : Require(task, Resolve(dataRoot, spec.TestIds), "PubMedQA's test_ground_truth.json: a JSON object whose keys are the 500 test PMIDs");
                var data = PubMedQaReader.Read(test, ids);
                return spec.FewShotPool == null ? data
                    : data with { FewShotPool = PubMedQaReader.ReadAll(Require(task, Resolve(dataRoot, spec.FewShotPool), PubMedQaReader.Expected)), FewShotSource = spec.FewShotPool };
            }
            case DatasetFormat.McqaJsonl:
            {
                var items = McqaReader.Read(test);
                return spec.FewShotPool == null
                    ? new TaskData(items, items, "the evaluation split itself, excluding the item being asked")
                    : new TaskData(items, McqaReader.Read(Require(task, Resolve(dataRoot, spec.FewShotPool), McqaReader.Expected)), spec.FewShotPool);
            }
            case DatasetFormat.Instruction:
            {
                var items = InstructionReader.Read(test, task.AnswerKind);
                return spec.FewShotPool == null
                    ? new TaskData(items, items, "the evaluation split itself, excluding the item being asked")
                    : new TaskData(items, InstructionReader.Read(Require(task, Resolve(dataRoot, spec.FewShotPool), InstructionReader.Expected), task.AnswerKind), spec.FewShotPool);
            }
            default:
                throw new DatasetException($"Task '{task.Name}': unknown dataset format {spec.Format}");
        }
    }

    public static string ExpectedLayout(TaskDefinition task) => task.Dataset.Format switch
    {
        DatasetFormat.PubMedQa => PubMedQaReader.Expected,
        DatasetFormat.McqaJsonl => McqaReader.Expected,
        _ => InstructionReader.Expected,
    };

    static string Require(TaskDefinition task, string path, string expected)
    {
        if (File.Exists(path)) return path;
        string obtain = task.Dataset.Obtain ?? "";
        if (task.Dataset.Credentialed)
            obtain = ("This dataset is under a data-use agreement and is not distributed with MeLlama; obtain it yourself and point --data-root (or the task file) at it. " + obtain).Trim();
        throw DatasetException.Missing(task.Name, path, expected, obtain.Length == 0 ? null : obtain);
    }
}
