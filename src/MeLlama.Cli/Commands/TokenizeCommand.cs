using System.CommandLine;

namespace MeLlama.Cli.Commands;

public static class TokenizeCommand
{
    public static Command Create()
    {
        var command = new Command("tokenize", "Tokenize JSON lines with a \"text\" field into JSON lines with \"ids\"");
        command.SetAction(_ => 0);
        return command;
    }
}
