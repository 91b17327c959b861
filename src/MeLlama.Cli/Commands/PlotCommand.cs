using System.CommandLine;
using MeLlama.Core.Logging;
using MeLlama.Training.Plotting;

namespace MeLlama.Cli.Commands;

/// <summary>`mellama plot RUN_DIR`: loss and learning-rate curves of a pretraining run as PNG.</summary>
public static class PlotCommand
{
    public static Command Create()
    {
        var runDir = new Argument<string>("RUN_DIR") { Description = "A pretrain run folder (holds metrics.jsonl)" };
        var output = new Option<string?>("--out", "-o") { Description = "Folder for the PNGs (default RUN_DIR/plots)" };
        var command = new Command("plot", "Render loss (train and per-domain held-out) and learning-rate curves of a run to PNG") { runDir, output };
        command.SetAction(parse =>
        {
            using var log = LogSetup.Create(GlobalOptions.LogOptions(parse));
            try
            {
                foreach (var file in RunPlotter.Plot(parse.GetValue(runDir)!, parse.GetValue(output))) Console.WriteLine(file);
                return 0;
            }
            catch (Exception e)
            {
                return CommandFailures.Report(e, log, "plot", readingInput: true);
            }
        });
        return command;
    }
}
