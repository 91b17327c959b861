namespace MeLlama.Evaluation.Prompting;

/// <summary>How the task prompt is wrapped before it reaches the model.</summary>
public enum PromptFormat
{
    /// <summary>The prompt as is (base models, log-likelihood scoring).</summary>
    Plain,
    /// <summary>Me-LLaMA's evaluation wrapper: "Human: \n{prompt}\n\nAssistant: \n" (src/model_prompt.py in BIDS-Xu-Lab/Me-LLaMA).</summary>
    MeLlama,
}

public static class PromptFormats
{
    public static string Wrap(PromptFormat format, string prompt) => format switch
    {
        PromptFormat.Plain => prompt,
        PromptFormat.MeLlama => $"Human: \n{prompt}\n\nAssistant: \n",
        _ => throw new ArgumentOutOfRangeException(nameof(format)),
    };

    public static PromptFormat Parse(string text) => text.ToLowerInvariant() switch
    {
        "plain" or "none" => PromptFormat.Plain,
        "mellama" or "me-llama" => PromptFormat.MeLlama,
        _ => throw new ArgumentException($"Unknown prompt format '{text}' (plain or mellama)"),
    };
}
