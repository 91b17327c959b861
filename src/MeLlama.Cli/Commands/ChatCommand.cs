using System.CommandLine;
using MeLlama.Core.Logging;
using MeLlama.Inference.Generation;

namespace MeLlama.Cli.Commands;

/// <summary>`mellama chat`: an interactive multi-turn session in the terminal.</summary>
public static class ChatCommand
{
    public static Command Create()
    {
        var shared = new GenerationCliOptions();
        var command = new Command("chat",
            "Talk to a model folder in the terminal. The history goes through the chat template every turn (oldest turns are dropped " +
            "when the context fills). A line ending in \\ continues on the next line. Commands: /reset clears the history, /exit (or end of input) quits; " +
            "Ctrl-C stops a reply.");
        shared.AddTo(command);
        command.SetAction((parse, cancel) => Task.FromResult(Run(parse, shared, cancel)));
        return command;
    }

    /// <summary>One user message: a line, or several joined by newlines when each but the last ends with a backslash.</summary>
    static string? ReadMessage()
    {
        string? line = Console.In.ReadLine();
        if (line is null) return null;
        var message = new System.Text.StringBuilder();
        while (line.EndsWith('\\'))
        {
            message.Append(line, 0, line.Length - 1).Append('\n');
            line = Console.In.ReadLine();
            if (line is null) return message.ToString();
        }
        return message.Append(line).ToString();
    }

    static int Run(ParseResult parse, GenerationCliOptions shared, CancellationToken cancel)
    {
        using var log = LogSetup.Create(GlobalOptions.LogOptions(parse));
        try
        {
            var options = shared.Options(parse);
            using var folder = shared.LoadModel(parse, log);
            var template = folder.ResolveTemplate(parse.GetValue(shared.Template));
            if (template.Id == Inference.ChatTemplates.ChatTemplateRegistry.None)
                log.Warning("No chat template: the model folder records none and --template was not given; the history is plain concatenated text");
            var session = new ChatSession(new TextGenerator(folder.Model, folder.Tokenizer), template, parse.GetValue(shared.System));
            Console.Error.WriteLine($"Chatting with {parse.GetValue(shared.Model)} (template {template.Id}). /reset clears the history, /exit quits.");

            // Ctrl-C while a reply is being generated stops that reply; at the prompt it ends the program as usual.
            CancellationTokenSource? replying = null;
            ConsoleCancelEventHandler handler = (_, e) =>
            {
                var current = replying;
                if (current is null || current.IsCancellationRequested) return;
                e.Cancel = true;
                current.Cancel();
            };
            Console.CancelKeyPress += handler;
            try
            {
                while (!cancel.IsCancellationRequested)
                {
                    Console.Error.Write("\n> ");
                    string? line = ReadMessage();
                    if (line is null) break;
                    line = line.Trim();
                    if (line.Length == 0) continue;
                    if (line is "/exit" or "/quit") break;
                    if (line == "/reset")
                    {
                        session.Reset();
                        Console.Error.WriteLine("(history cleared)");
                        continue;
                    }
                    if (line.StartsWith('/'))
                    {
                        Console.Error.WriteLine("(commands: /reset, /exit)");
                        continue;
                    }
                    int droppedBefore = session.DroppedTurns;
                    using (replying = CancellationTokenSource.CreateLinkedTokenSource(cancel))
                    {
                        var result = session.Send(line, options, text => { Console.Out.Write(text); Console.Out.Flush(); }, replying.Token);
                        Console.Out.WriteLine();
                        if (result.Finish == FinishReason.Cancelled) Console.Error.WriteLine("(stopped)");
                        else if (result.Finish is FinishReason.MaxTokens or FinishReason.ContextFull) Console.Error.WriteLine($"(reply cut at {result.GeneratedIds.Length} tokens: {result.Finish})");
                        log.Debug("{Tokens} tokens, {Rate:F1} tokens/s, {Finish}", result.GeneratedIds.Length, result.TokensPerSecond, result.Finish);
                    }
                    replying = null;
                    if (session.DroppedTurns > droppedBefore)
                        Console.Error.WriteLine($"(the oldest {session.DroppedTurns - droppedBefore} turn(s) no longer fit the context and were dropped)");
                }
            }
            finally
            {
                Console.CancelKeyPress -= handler;
            }
            return 0;
        }
        catch (Exception e)
        {
            return CommandFailures.Report(e, log, "chat");
        }
    }
}
