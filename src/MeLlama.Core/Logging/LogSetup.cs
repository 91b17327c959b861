using Serilog;
using Serilog.Core;
using Serilog.Events;
using Serilog.Formatting.Compact;

namespace MeLlama.Core.Logging;

/// <summary>Options for the process-wide logger.</summary>
/// <param name="JsonFile">Also write compact JSON (one event per line) here.</param>
/// <param name="Rank">Data-parallel rank, stamped on every event and shown in console lines when set.</param>
public sealed record LogOptions(LogEventLevel Level = LogEventLevel.Information, string? JsonFile = null, int? Rank = null, bool Quiet = false);

/// <summary>
/// Builds the Serilog logger used by the CLI. Console output goes to stderr so that commands whose
/// stdout is data (tokenize, score, generate --input) stay pipeable.
/// Clinical text must never be passed to the logger: log counts, ids, paths and hashes only.
/// </summary>
public static class LogSetup
{
    public static Logger Create(LogOptions options)
    {
        var config = new LoggerConfiguration()
            .MinimumLevel.Is(options.Level)
            .Enrich.FromLogContext();
        if (options.Rank is int rank)
            config = config.Enrich.WithProperty("Rank", rank);
        string template = options.Rank is null
            ? "[{Timestamp:HH:mm:ss} {Level:u3}] {Message:lj}{NewLine}{Exception}"
            : "[{Timestamp:HH:mm:ss} {Level:u3} rank {Rank}] {Message:lj}{NewLine}{Exception}";
        if (!options.Quiet)
            config = config.WriteTo.Console(outputTemplate: template, standardErrorFromLevel: LogEventLevel.Verbose, formatProvider: System.Globalization.CultureInfo.InvariantCulture);
        if (options.JsonFile is { } path)
        {
            var dir = Path.GetDirectoryName(Path.GetFullPath(path));
            if (dir != null) Directory.CreateDirectory(dir);
            config = config.WriteTo.File(new CompactJsonFormatter(), path);
        }
        return config.CreateLogger();
    }
}
