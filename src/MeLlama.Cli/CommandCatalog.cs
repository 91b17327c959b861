using System.CommandLine;
using MeLlama.Cli.Commands;

namespace MeLlama.Cli;

/// <summary>Every `mellama` subcommand, in the order `--help` lists them. Only working commands belong here.</summary>
public static class CommandCatalog
{
    public static IEnumerable<Command> Create()
    {
        yield return TokenizeCommand.Create();
        yield return PretrainCommand.Create();
        yield return ExportCommand.Create();
        yield return PlotCommand.Create();
        yield return DemoCommand.Create();
        yield return ScoreCommand.Create();
        yield return PrepareCommand.Create();
    }
}
