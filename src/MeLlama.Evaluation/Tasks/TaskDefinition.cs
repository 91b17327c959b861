using System.Text.Json.Serialization;

namespace MeLlama.Evaluation.Tasks;

/// <summary>How a task's answer is represented, parsed and scored.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<AnswerKind>))]
public enum AnswerKind
{
    /// <summary>One label out of a fixed set (QA, single-label classification, NLI). Log-likelihood or generation.</summary>
    Choice,
    /// <summary>A set of labels (HoC): per-label F1 averaged.</summary>
    MultiLabel,
    /// <summary>Entity mentions, one "span, TYPE" line each (NER): entity-level micro/macro F1.</summary>
    Entities,
    /// <summary>Relation triples, one line each: relation-level micro F1.</summary>
    Relations,
    /// <summary>A short free-text answer (emrQA): exact match and token F1.</summary>
    Extractive,
    /// <summary>A summary: ROUGE-1/2/L.</summary>
    Summary,
}

/// <summary>File layout a dataset is read from (see Datasets/).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<DatasetFormat>))]
public enum DatasetFormat
{
    /// <summary>PubMedQA's ori_pqal.json (object of PMID → {QUESTION, CONTEXTS, LONG_ANSWER, final_decision}) plus a test-id file.</summary>
    PubMedQa,
    /// <summary>MedQA/MedMCQA JSON lines: question, options {A..E}, answer_idx.</summary>
    McqaJsonl,
    /// <summary>The clinicalnlplab/*_test layout: query, answer, optional choices and gold (index or indices), optional id. JSON lines or a JSON array.</summary>
    Instruction,
}

/// <summary>Where a task's data lives. Paths are relative to the data root unless absolute.</summary>
public sealed record DatasetSpec
{
    public required DatasetFormat Format { get; init; }
    /// <summary>The evaluation split.</summary>
    public required string Test { get; init; }
    /// <summary>PubMedQA only: file whose keys (object) or elements (array) are the test PMIDs.</summary>
    public string? TestIds { get; init; }
    /// <summary>Optional train/dev file (same format) to draw few-shot examples from. Without it the pool is
    /// the rest of the data (PubMedQA: the PQA-L items outside the test ids; otherwise the test split minus the item).</summary>
    public string? FewShotPool { get; init; }
    /// <summary>True for data under a data-use agreement (MIMIC, i2b2/n2c2, MedNLI): never shipped, outputs kept owner-only.</summary>
    public bool Credentialed { get; init; }
    /// <summary>How a user obtains the file (shown when it is missing).</summary>
    public string? Obtain { get; init; }
}

/// <summary>
/// One evaluation task (one dataset), loaded from configs/eval/NAME.json. Prompt templates use
/// {field} placeholders filled from the item (see <see cref="EvalItem"/>); "{{" and "}}" are literal braces.
/// </summary>
public sealed record TaskDefinition
{
    public required string Name { get; init; }
    public string? Title { get; init; }
    /// <summary>Me-LLaMA task family, for the report: QA, NER, RE, Classification, Summarization, NLI.</summary>
    public string? Family { get; init; }
    public required AnswerKind AnswerKind { get; init; }
    public required DatasetSpec Dataset { get; init; }
    /// <summary>The item's prompt (without the chat wrapper or few-shot examples).</summary>
    public required string Prompt { get; init; }
    /// <summary>Text appended to a few-shot example's prompt to show its answer, e.g. " {gold}".</summary>
    public string Target { get; init; } = " {gold}";
    /// <summary>Log-likelihood mode: the continuation scored for each choice, e.g. " {label}" or " {choice}".</summary>
    public string Continuation { get; init; } = " {label}";
    /// <summary>Fixed label set (macro-F1 averages over it); otherwise the union of the items' choice labels.</summary>
    public IReadOnlyList<string>? Labels { get; init; }
    public int MaxNewTokens { get; init; } = 32;
    /// <summary>Generation stops before any of these (default: a blank line and "Human:" for short answers, "Human:" otherwise).</summary>
    public IReadOnlyList<string>? Stop { get; init; }
    /// <summary>Entities: regex with named groups span and type, applied per line. Relations: head, tail, type.</summary>
    public string? LinePattern { get; init; }
    /// <summary>Summary: Porter-stem tokens before ROUGE (rouge-score's use_stemmer).</summary>
    public bool RougeStemmer { get; init; } = true;
    /// <summary>Our metric name → metric key in paper_results.json for this task.</summary>
    public IReadOnlyDictionary<string, string>? PaperMetrics { get; init; }
    /// <summary>Key of this dataset in paper_results.json (defaults to Name).</summary>
    public string? PaperKey { get; init; }
}
