using System.Text.Json;
using MeLlama.Data.Config;
using MeLlama.Data.Prepare;
using MeLlama.Distributed;
using MeLlama.Evaluation.Datasets;
using MeLlama.Training.Config;
using MeLlama.Training.Runtime;
using Serilog;

namespace MeLlama.Cli;

/// <summary>How a command failed: its exit code, one line for the user, and whether the stack trace helps (a bug, not bad input).</summary>
public sealed record CommandFailure(int ExitCode, string Message, bool IsBug);

/// <summary>
/// The one mapping from a failure to an exit code that every command uses: 2 bad input (the message names the file,
/// line or field), 75 stopped by a signal (run the same command again to continue: Slurm requeue), 1 anything else.
/// <para>Messages never carry record text: our own input exceptions name file/line/field only (see
/// <see cref="DatasetException"/>, <c>InstructionDataReader</c>), and a JSON parser's message, which can quote the
/// offending text, is replaced by its position.</para>
/// </summary>
public static class CommandFailures
{
    /// <param name="readingInput">True while the command only reads its inputs (config, model folder, tokenizer):
    /// an I/O error there is a bad input (2), later it is a runtime failure (1).</param>
    public static CommandFailure Classify(Exception e, bool readingInput = false) => e switch
    {
        OperationCanceledException => new(ExitCodes.Preempted, "interrupted; run the same command again to continue", false),
        CollectiveException => new(ExitCodes.Failed, $"Collectives failed: {e.Message}", false),
        PeerAuthenticationException or TimeoutException => new(ExitCodes.Failed, $"Could not join the job: {e.Message}", false),
        PlatformNotSupportedException => new(ExitCodes.Failed, e.Message, false),
        // TorchSharp found no libtorch: a -p:LibTorchSource=external build run without the host's libtorch on the
        // loader path, or a broken install. Its own message is a page long; the first line says what was looked for.
        TypeInitializationException { TypeName: "TorchSharp.torch" } t => new(ExitCodes.Failed,
            "libtorch could not be loaded" + (t.InnerException is { } inner ? $" ({inner.Message.Split('\n')[0].Trim()})" : "") +
            ". A build with -p:LibTorchSource=external needs the host's libtorch: `source scripts/gpu/external-libtorch.sh` first; " +
            "other builds ship it (TorchSharp-cpu / TorchSharp-cuda-linux).", false),
        // .NET's own "Could not find file '…'" becomes one short line; our messages (which say what the file is for) stay.
        FileNotFoundException { FileName: { } file } when e.Message.StartsWith("Could not find file", StringComparison.Ordinal)
            => new(ExitCodes.BadInput, $"file not found: {file}", false),
        JsonException j => new(ExitCodes.BadInput, $"malformed JSON{JsonPosition(j)}", false),
        ConfigError or DistributedEnvironmentException or DataConfigException or PrepareInputException or PrepareOutputException
            or DatasetException or FileNotFoundException or DirectoryNotFoundException or InvalidDataException or FormatException
            or NotSupportedException or Commands.ScoreInputException or Commands.TokenizeInputException
            => new(ExitCodes.BadInput, e.Message, false),
        ArgumentException and not ArgumentNullException => new(ExitCodes.BadInput, e.Message, false),
        IOException or UnauthorizedAccessException or KeyNotFoundException when readingInput => new(ExitCodes.BadInput, e.Message, false),
        IOException or UnauthorizedAccessException => new(ExitCodes.Failed, $"I/O error: {e.Message}", false),
        _ => new(ExitCodes.Failed, $"{e.GetType().Name}: {e.Message}", true),
    };

    /// <summary>Logs <paramref name="e"/> as the command's closing error and returns the exit code.</summary>
    public static int Report(Exception e, ILogger log, string command, bool readingInput = false)
    {
        var f = Classify(e, readingInput);
        if (f.IsBug) log.Fatal(e, "{Command} failed: {Message}", command, f.Message);
        else if (f.ExitCode == ExitCodes.Preempted) log.Warning("{Command}: {Message}", command, f.Message);
        else log.Error("{Command}: {Message}", command, f.Message);
        return f.ExitCode;
    }

    /// <summary>For failures before logging is set up (config and option parsing): one line on <paramref name="stderr"/>.</summary>
    /// <param name="log">Also gets a bug's stack trace.</param>
    public static int Report(Exception e, TextWriter stderr, string command, bool readingInput = true, ILogger? log = null)
    {
        var f = Classify(e, readingInput);
        if (f.IsBug) log?.Fatal(e, "{Command} failed", command);
        stderr.WriteLine($"mellama {command}: {f.Message}");
        return f.ExitCode;
    }

    static string JsonPosition(JsonException j) =>
        (j.Path, j.LineNumber, j.BytePositionInLine) switch
        {
            (null, null, _) => "",
            (var path, { } line, { } pos) => $" at line {line + 1}, byte {pos}{(path is null ? "" : $" ({path})")}",
            (var path, _, _) => $" ({path})",
        };
}
