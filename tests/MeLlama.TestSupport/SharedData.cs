namespace MeLlama.TestSupport;

/// <summary>
/// Locates the read-only ../shared folder (beside the repository) that holds the LLaMA-2 tokenizer,
/// sample corpora and tiny checkpoints. MELLAMA_SHARED overrides the location. Tests that need it call
/// <see cref="Require"/>, which skips the test with a clear reason when it is absent.
/// </summary>
public static class SharedData
{
    public static string? Root { get; } = Locate();

    public static string RepoRoot { get; } = FindRepoRoot() ?? throw new InvalidOperationException("MeLlama.sln not found above " + AppContext.BaseDirectory);

    static string? FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MeLlama.sln"))) return dir.FullName;
        return null;
    }

    static string? Locate()
    {
        var env = Environment.GetEnvironmentVariable("MELLAMA_SHARED");
        if (!string.IsNullOrEmpty(env)) return Directory.Exists(env) ? Path.GetFullPath(env) : null;
        var repo = FindRepoRoot();
        if (repo == null) return null;
        var shared = Path.GetFullPath(Path.Combine(repo, "..", "shared"));
        return Directory.Exists(shared) ? shared : null;
    }

    /// <summary>Full path of <paramref name="relative"/> under ../shared; skips the calling test if it is missing.</summary>
    public static string Require(string relative)
    {
        Skip.If(Root == null, "../shared is absent (set MELLAMA_SHARED to its location to run this test)");
        var path = Path.Combine(Root!, relative);
        Skip.IfNot(File.Exists(path) || Directory.Exists(path), $"../shared/{relative} is absent");
        return path;
    }

    public const string LlamaTokenizer = "data/tokenizer/llama2/tokenizer.model";
    public const string TokenizerGolden = "fixtures/tokenizer/llama2_golden.jsonl";
    public const string TinyLlama = "fixtures/tiny-llama";
    public const string TinyLlamaBf16Sharded = "fixtures/tiny-llama-bf16-sharded";
    public const string PubMedQa = "data/corpus/pubmedqa/ori_pqal.json";
    public const string ClinicalNotes = "data/corpus/clinical-notes";
    public const string Mcqa = "data/eval/mcqa";
}

/// <summary>A temporary folder deleted when disposed.</summary>
public sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("mellama-test-").FullName;
    public string this[string relative] => System.IO.Path.Combine(Path, relative);
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
