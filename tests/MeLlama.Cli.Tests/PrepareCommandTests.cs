using System.CommandLine;
using MeLlama.Cli;
using MeLlama.TestSupport;
using static MeLlama.Cli.Tests.InProcessCli;

namespace MeLlama.Cli.Tests;

public class PrepareCommandTests
{
    [Fact]
    public void Prepare_writes_datasets_and_a_summary_table()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["a.jsonl"], string.Concat(Enumerable.Range(0, 50).Select(i => $"{{\"text\": \"Document number {i} about hypertension and its treatment.\"}}\n")));
        File.WriteAllText(dir["c.json"], """{"name": "cli", "evalFraction": 0, "sources": [{"name": "a", "domain": "biomedical", "format": "jsonl", "paths": ["a.jsonl"]}]}""");
        var (code, stdout, stderr) = Mellama("prepare", "--config", dir["c.json"], "--out", dir["out"], "--threads", "2", "-q");
        Assert.True(code == 0, stderr);
        Assert.Contains("biomedical", stdout);
        Assert.True(File.Exists(Path.Combine(dir["out"], "biomedical", "manifest.json")));
        Assert.True(File.Exists(Path.Combine(dir["out"], "biomedical", "train-00000.idx")));
    }

    [Fact]
    public void Bad_config_and_bad_input_under_fail_exit_2_with_the_file_and_line()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["bad.json"], """{"sources": [{"name": "a", "domain": "legal", "format": "jsonl", "paths": ["a.jsonl"]}]}""");
        var (code, _, stderr) = Mellama("prepare", "--config", dir["bad.json"], "--out", dir["out"], "-q");
        Assert.Equal(2, code);
        Assert.Contains("domain 'legal'", stderr);

        File.WriteAllText(dir["a.jsonl"], "{\"text\": \"A fine document that is long enough to keep.\"}\n{broken\n");
        File.WriteAllText(dir["c.json"], """{"sources": [{"name": "a", "domain": "biomedical", "format": "jsonl", "paths": ["a.jsonl"], "onError": "fail"}]}""");
        (code, _, stderr) = Mellama("prepare", "--config", dir["c.json"], "--out", dir["out2"], "-q");
        Assert.Equal(2, code);
        Assert.Contains("a.jsonl line 2: malformed_json", stderr);
    }
}
