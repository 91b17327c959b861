using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using MeLlama.Evaluation.Tasks;

namespace MeLlama.Evaluation.Harness;

/// <summary>
/// Hash of everything a cached answer depends on: model (weights + tokenizer), the task definition as
/// loaded (prompt, parsing, continuation...), mode, shots, seed and prompt format. Changing any of them
/// starts fresh predictions instead of mixing old ones in.
/// </summary>
public static class RunFingerprint
{
    public static string Compute(string modelFingerprint, TaskDefinition task, EvalMode mode, int shots, ulong seed, Prompting.PromptFormat format)
    {
        string taskJson = JsonSerializer.Serialize(task, TaskCatalog.JsonOptions);
        string text = string.Join("\u0000", modelFingerprint, taskJson, EvalSettings.ModeName(mode), shots.ToString(System.Globalization.CultureInfo.InvariantCulture),
            seed.ToString(System.Globalization.CultureInfo.InvariantCulture), format.ToString());
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..16];
    }
}
