using MeLlama.Inference.ChatTemplates;

namespace MeLlama.Training.Finetune.Data;

/// <summary>One training conversation and where it came from (file:line, for error messages; never its text).</summary>
public sealed record InstructionExample(IReadOnlyList<ChatMessage> Messages, string Source, InstructionFormat Format);

/// <summary>The record shapes the reader understands.</summary>
public enum InstructionFormat
{
    /// <summary><c>{"instruction", "input"?, "output", "system"?}</c> (Stanford Alpaca).</summary>
    Alpaca,
    /// <summary><c>{"conversations": [{"from": "human"|"gpt"|"agent"|"system", "value"}], "system"?}</c> (ShareGPT, Me-LLaMA).</summary>
    ShareGpt,
    /// <summary><c>{"messages": [{"role": "user"|"assistant"|"system", "content"}]}</c> (OpenAI chat).</summary>
    Messages,
    /// <summary><c>{"prompt", "completion"|"response"}</c>.</summary>
    PromptCompletion,
    /// <summary>PubMedQA's keyed object {pmid: {QUESTION, CONTEXTS, LONG_ANSWER, final_decision}} (see <see cref="PubMedQaInstructions"/>).</summary>
    PubMedQa,
}

/// <summary>What to do with a record that cannot be used.</summary>
public enum MalformedRecordPolicy
{
    /// <summary>Stop with an error naming the file, line and problem.</summary>
    Error,
    /// <summary>Skip it and count it (by problem) in the report.</summary>
    Skip,
}
