using System.CommandLine;
using System.Text.Json;

namespace MeLlama.Cli.Tests;

/// <summary>Runs `mellama &lt;args&gt;` in this process with the real command catalog and captured stdout/stderr.</summary>
static class InProcessCli
{
    public static (int ExitCode, string Stdout, string Stderr) Mellama(params string[] args)
    {
        var root = new RootCommand();
        foreach (var option in GlobalOptions.All) root.Options.Add(option);
        foreach (var command in CommandCatalog.Create()) root.Subcommands.Add(command);
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = root.Parse(args).Invoke(new InvocationConfiguration { Output = stdout, Error = stderr });
        return (code, stdout.ToString(), stderr.ToString());
    }

    public static List<JsonElement> ReadJsonLines(string text) =>
        text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();
}
