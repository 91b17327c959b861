using System.CommandLine;
using MeLlama.Core.Logging;
using Serilog.Events;

namespace MeLlama.Cli;

/// <summary>Options every command accepts (logging).</summary>
public static class GlobalOptions
{
    public static readonly Option<string?> LogJson = new("--log-json") { Description = "Also write structured JSON logs (one event per line) to this file", Recursive = true };
    public static readonly Option<bool> Verbose = new("--verbose", "-v") { Description = "Debug-level logging", Recursive = true };
    public static readonly Option<bool> Quiet = new("--quiet", "-q") { Description = "Only warnings and errors on the console", Recursive = true };

    public static IEnumerable<Option> All => [LogJson, Verbose, Quiet];

    public static LogOptions LogOptions(ParseResult parse, int? rank = null) => new(
        Level: parse.GetValue(Verbose) ? LogEventLevel.Debug : parse.GetValue(Quiet) ? LogEventLevel.Warning : LogEventLevel.Information,
        JsonFile: parse.GetValue(LogJson),
        Rank: rank);
}
