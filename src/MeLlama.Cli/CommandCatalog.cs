using System.CommandLine;
using MeLlama.Cli.Commands;

namespace MeLlama.Cli;

/// <summary>Every `mellama` subcommand, in the order `--help` lists them. Only working commands belong here.</summary>
public static class CommandCatalog
{
    public static IEnumerable<Command> Create()
    {
        yield return DemoCommand.Create();
        yield return PrepareCommand.Create();
        yield return PretrainCommand.Create();
        yield return FinetuneCommand.Create();
        yield return ExportCommand.Create();
        yield return GenerateCommand.Create();
        yield return ChatCommand.Create();
        yield return ScoreCommand.Create();
        yield return EvalCommand.Create();
        yield return TokenizeCommand.Create();
        yield return PlotCommand.Create();
        yield return LaunchCommand.Create();
        yield return PlanCommand.Create();
        yield return CollectivesSelftestCommand.Create();
    }
}
