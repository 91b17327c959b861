using System.Text.Json;
using MeLlama.Data.Config;
using MeLlama.Distributed;
using MeLlama.TestSupport;
using MeLlama.Training.Config;
using Serilog;
using Serilog.Core;
using Serilog.Events;

namespace MeLlama.Cli.Tests;

public class CommandFailuresTests
{
    public static TheoryData<Exception, int> BadInputs => new()
    {
        { new ConfigError("optimizer.lr must be positive"), 2 },
        { new DataConfigException("sources.0: domain 'legal' has no weight"), 2 },
        { new DistributedEnvironmentException("WORLD_SIZE=0 is not a positive number"), 2 },
        { new InvalidDataException("train.jsonl:7: not valid JSON (at byte 3 of the line)"), 2 },
        { new DirectoryNotFoundException("Could not find a part of the path '/no/such/dir'."), 2 },
        { new FormatException("--time-limit '3x' is not a duration"), 2 },
        { new ArgumentException("--dtype must be bf16 or fp32"), 2 },
    };

    [Theory]
    [MemberData(nameof(BadInputs))]
    public void Bad_input_is_exit_2_with_its_own_message(Exception e, int expected)
    {
        var f = CommandFailures.Classify(e);
        Assert.Equal(expected, f.ExitCode);
        Assert.Equal(e.Message, f.Message);
        Assert.False(f.IsBug);
    }

    [Fact]
    public void A_missing_libtorch_says_how_to_provide_it_in_one_line()
    {
        // What TorchSharp throws when no libtorch can be loaded (e.g. an external-libtorch build without the host's).
        var inner = new NotSupportedException("This application or script uses TorchSharp but doesn't contain a reference to libtorch-cpu-linux-x64, Version=2.10.0.0.\n\nConsider referencing ...");
        var e = new TypeInitializationException("TorchSharp.torch", inner);
        var f = CommandFailures.Classify(e);
        Assert.Equal(1, f.ExitCode);
        Assert.False(f.IsBug);
        Assert.Contains("external-libtorch.sh", f.Message);
        Assert.Contains("libtorch-cpu-linux-x64", f.Message);
        Assert.DoesNotContain("Consider referencing", f.Message);
        // Another type's initializer failing is still a bug with its stack trace.
        Assert.True(CommandFailures.Classify(new TypeInitializationException("Other.Type", inner)).IsBug);
    }

    [Fact]
    public void A_missing_file_is_exit_2_naming_the_file()
    {
        var f = CommandFailures.Classify(new FileNotFoundException("Could not find file.", "/data/recipe.json"));
        Assert.Equal((2, "file not found: /data/recipe.json"), (f.ExitCode, f.Message));
    }

    [Fact]
    public void Interrupted_by_a_signal_is_exit_75_to_be_requeued()
    {
        Assert.Equal(75, CommandFailures.Classify(new OperationCanceledException()).ExitCode);
        Assert.Equal(75, CommandFailures.Classify(new TaskCanceledException()).ExitCode);
        Assert.Contains("run the same command again", CommandFailures.Classify(new OperationCanceledException()).Message);
    }

    [Fact]
    public void Runtime_failures_are_exit_1_and_only_unknown_ones_count_as_bugs()
    {
        var collective = CommandFailures.Classify(new CollectiveException("rank 3 stopped answering", failedRank: 3));
        Assert.Equal((1, false), (collective.ExitCode, collective.IsBug));
        Assert.Contains("rank 3", collective.Message);

        var disk = CommandFailures.Classify(new IOException("No space left on device"));
        Assert.Equal((1, "I/O error: No space left on device", false), (disk.ExitCode, disk.Message, disk.IsBug));
        Assert.Equal(1, CommandFailures.Classify(new TimeoutException("rendezvous timed out")).ExitCode);

        var bug = CommandFailures.Classify(new InvalidOperationException("sequence contains no elements"));
        Assert.Equal((1, true), (bug.ExitCode, bug.IsBug));
        Assert.StartsWith("InvalidOperationException: ", bug.Message);
        Assert.StartsWith("Collectives failed", collective.Message); // launched tests look for this phrase
        // A null argument is a bug in the caller, not bad input.
        Assert.True(CommandFailures.Classify(new ArgumentNullException("x")).IsBug);
    }

    [Fact]
    public void An_io_error_while_reading_inputs_is_bad_input()
    {
        Assert.Equal(2, CommandFailures.Classify(new IOException("Permission denied"), readingInput: true).ExitCode);
        Assert.Equal(2, CommandFailures.Classify(new UnauthorizedAccessException("Access denied"), readingInput: true).ExitCode);
        Assert.Equal(1, CommandFailures.Classify(new UnauthorizedAccessException("Access denied")).ExitCode);
    }

    [Fact]
    public void A_json_parser_error_reports_the_position_never_the_text()
    {
        var e = Assert.ThrowsAny<JsonException>(() => JsonDocument.Parse("{\"note\": \"pt reports chest pain\"\n Mrs Doe, 54, diabetic}"));
        var f = CommandFailures.Classify(e);
        Assert.Equal(2, f.ExitCode);
        Assert.StartsWith("malformed JSON at line 2", f.Message);
        Assert.DoesNotContain("Doe", f.Message);
        Assert.DoesNotContain("'M'", f.Message);
    }

    [Fact]
    public void Report_logs_bad_input_as_one_error_line_and_a_bug_with_its_stack_trace()
    {
        var sink = new ListSink();
        using var log = new LoggerConfiguration().WriteTo.Sink(sink).CreateLogger();
        Assert.Equal(2, CommandFailures.Report(new ConfigError("seq_len must be positive"), log, "pretrain"));
        Assert.Equal(1, CommandFailures.Report(new InvalidOperationException("boom"), log, "pretrain"));
        Assert.Equal(75, CommandFailures.Report(new OperationCanceledException(), log, "prepare"));
        Assert.Collection(sink.Events,
            e => { Assert.Equal(LogEventLevel.Error, e.Level); Assert.Null(e.Exception); Assert.Contains("seq_len must be positive", e.RenderMessage()); },
            e => { Assert.Equal(LogEventLevel.Fatal, e.Level); Assert.IsType<InvalidOperationException>(e.Exception); },
            e => Assert.Equal(LogEventLevel.Warning, e.Level));
    }

    [Fact]
    public void Report_before_logging_writes_one_line_naming_the_command()
    {
        var stderr = new StringWriter();
        Assert.Equal(2, CommandFailures.Report(new ConfigError("unknown key 'optimzer'"), stderr, "finetune"));
        Assert.Equal("mellama finetune: unknown key 'optimzer'" + Environment.NewLine, stderr.ToString());
    }

    [Fact]
    public void Training_commands_map_a_bad_recipe_and_a_bad_time_limit_to_2()
    {
        using var dir = new TempDir();
        foreach (var command in new[] { "pretrain", "finetune" })
        {
            var (code, stdout, stderr) = InProcessCli.Mellama(command, "--config", dir["missing.json"], "--print-config", "-q");
            Assert.Equal(2, code);
            Assert.StartsWith($"mellama {command}: ", stderr);
            Assert.Contains("missing.json", stderr);
            Assert.Equal("", stdout);
            (code, _, stderr) = InProcessCli.Mellama(command, "--config", "demo", "--time-limit", "soon", "--print-config", "-q");
            Assert.Equal(2, code);
            Assert.StartsWith($"mellama {command}: ", stderr);
        }
    }

    [Fact]
    public void A_malformed_instruction_record_stops_finetune_with_2_and_its_text_stays_out_of_the_log()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["notes.jsonl"], "{\"instruction\": \"Summarise\", \"output\": \"ok\"}\n{\"instruction\": \"Mrs Zelda Quist, 54, diabetic\", \"output\": \n");
        var (code, _, _) = InProcessCli.Mellama("finetune", "--config", "demo", "--data", dir["notes.jsonl"], "--set", "data.malformed=\"error\"",
            "--run-dir", dir["run"], "--log-json", dir["log.jsonl"], "-q");
        Assert.Equal(2, code);
        string log = File.ReadAllText(dir["log.jsonl"]);
        Assert.Contains("notes.jsonl:2", log);
        Assert.DoesNotContain("Zelda", log);
    }

    sealed class ListSink : ILogEventSink
    {
        public List<LogEvent> Events { get; } = [];
        public void Emit(LogEvent logEvent) => Events.Add(logEvent);
    }
}
