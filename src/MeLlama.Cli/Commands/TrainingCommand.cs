using System.CommandLine;
using System.Text.Json;
using MeLlama.Training.Loop;
using Serilog;

namespace MeLlama.Cli.Commands;

/// <summary>
/// What `pretrain` and `finetune` share: the recipe options (--config, --set, --run-dir, --time-limit, --no-resume,
/// --print-config), loading the recipe with its overrides, and running a trainer with the one exit-code mapping
/// (<see cref="CommandFailures"/>) and the closing summary.
/// </summary>
static class TrainingCommand
{
    public sealed record RecipeOptions(Option<string> Config, Option<string[]> Set, Option<string?> RunDir, Option<string?> TimeLimit,
        Option<bool> NoResume, Option<bool> PrintConfig)
    {
        public IEnumerable<Option> All => [Config, Set, RunDir, TimeLimit, NoResume, PrintConfig];
    }

    public static RecipeOptions CreateOptions(string recipeKind, IEnumerable<string> builtInNames, string setExample) => new(
        new Option<string>("--config", "-c")
        {
            Description = $"{recipeKind}: a JSON file, or a built-in one ({string.Join(", ", builtInNames)}). Default: demo",
            DefaultValueFactory = _ => "demo",
        },
        new Option<string[]>("--set") { Description = $"Override a config key, e.g. {setExample} (repeatable)", AllowMultipleArgumentsPerToken = false },
        new Option<string?>("--run-dir") { Description = "Shorthand for --set run_dir=DIR" },
        new Option<string?>("--time-limit") { Description = "Wall-clock budget (3600, 45m, 3h50m, 23:50:00): save and exit 75 before it runs out" },
        new Option<bool>("--no-resume") { Description = "Do not continue from the run folder's checkpoints (refuses to start if there are some)" },
        new Option<bool>("--print-config") { Description = "Print the resolved config as JSON and exit" });

    /// <summary>A resolved recipe and the invocation's wall-clock budget.</summary>
    public sealed record Loaded<TConfig>(TConfig Config, TimeSpan? TimeLimit);

    /// <summary>
    /// Loads the recipe with --set/--run-dir (and <paramref name="extraOverrides"/>) applied, and parses --time-limit.
    /// Bad input is reported on stderr (logging is not set up yet: its file lives in the run folder) and gives null with
    /// the exit code in <paramref name="exitCode"/>.
    /// </summary>
    public static Loaded<TConfig>? Load<TConfig>(ParseResult parse, RecipeOptions o, string command,
        Func<string, IEnumerable<string>, TConfig> load, IEnumerable<string> extraOverrides, out int exitCode)
    {
        var overrides = (parse.GetValue(o.Set) ?? []).ToList();
        if (parse.GetValue(o.RunDir) is { } rd) overrides.Add("run_dir=" + JsonSerializer.Serialize(rd));
        overrides.AddRange(extraOverrides);
        exitCode = 0;
        try
        {
            var config = load(parse.GetValue(o.Config)!, overrides);
            return new Loaded<TConfig>(config, parse.GetValue(o.TimeLimit) is { } tl ? TimeBudget.Parse(tl) : null);
        }
        catch (Exception e)
        {
            exitCode = CommandFailures.Report(e, parse.InvocationConfiguration.Error, command);
            return null;
        }
    }

    /// <summary>
    /// Runs <paramref name="train"/> and returns the process exit code: the outcome's (0 completed, 75 stopped to be
    /// continued, 1 diverged), or the mapped failure. <paramref name="onFailure"/> sees the failure's message first
    /// (a rank tells the others to stop).
    /// </summary>
    public static int Run(ILogger log, string command, string runDir, Func<TrainOutcome> train,
        Action<TrainOutcome>? afterOutcome = null, Action<Exception>? onFailure = null)
    {
        try
        {
            var outcome = train();
            if (outcome.End == TrainEnd.Completed)
                foreach (var (domain, first) in outcome.FirstEval)
                    if (outcome.LastEval.TryGetValue(domain, out var last))
                        log.Information("Held-out {Domain}: loss {First:F4} → {Last:F4}", domain, first, last);
            if (outcome.End == TrainEnd.Diverged) log.Error("{Message}", outcome.Message);
            else log.Information("{Message}; checkpoint {Checkpoint}; run folder {RunDir} (exit {Code})", outcome.Message, outcome.Checkpoint, Path.GetFullPath(runDir), outcome.ExitCode);
            afterOutcome?.Invoke(outcome);
            return outcome.ExitCode;
        }
        catch (Exception e)
        {
            onFailure?.Invoke(e);
            return CommandFailures.Report(e, log, command);
        }
    }
}
