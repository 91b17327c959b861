namespace MeLlama.Distributed.Launch;

/// <summary>How <see cref="LocalLauncher"/> starts ranks on this machine (torchrun --standalone style).</summary>
public sealed record LaunchOptions
{
    /// <summary>Exit code a rank uses for "checkpoint saved after a stop signal, please requeue" (EX_TEMPFAIL).</summary>
    public const int RequeueExitCode = 75;

    public required int ProcessCount { get; init; }

    /// <summary>Arguments for each rank (a mellama subcommand and its options).</summary>
    public required IReadOnlyList<string> Arguments { get; init; }

    /// <summary>Program to start; null re-executes the current mellama (see <see cref="SelfInvocation"/>).</summary>
    public string? Executable { get; init; }

    /// <summary>Arguments placed before <see cref="Arguments"/> (e.g. the mellama.dll path when the program is the dotnet host).</summary>
    public IReadOnlyList<string> ExecutablePrefix { get; init; } = [];

    public string MasterAddr { get; init; } = "127.0.0.1";

    /// <summary>Store port; null picks a free one.</summary>
    public int? MasterPort { get; init; }

    /// <summary>After a rank fails, how long the others get to exit after SIGTERM before SIGKILL.</summary>
    public TimeSpan StopGrace { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Extra variables for every rank.</summary>
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();

    /// <summary>The way to start this same program again: the apphost directly, or <c>dotnet mellama.dll</c>.</summary>
    public static (string Executable, IReadOnlyList<string> Prefix) SelfInvocation()
    {
        var path = System.Environment.ProcessPath ?? throw new InvalidOperationException("cannot tell which program is running");
        if (Path.GetFileNameWithoutExtension(path) == "dotnet")
        {
            var entry = System.Reflection.Assembly.GetEntryAssembly()?.Location;
            if (string.IsNullOrEmpty(entry)) throw new InvalidOperationException("cannot find the entry assembly to re-run under dotnet");
            return (path, [entry]);
        }
        return (path, []);
    }
}
