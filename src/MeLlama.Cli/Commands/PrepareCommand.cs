using System.CommandLine;
using System.Globalization;
using MeLlama.Core.Logging;
using MeLlama.Data.Config;
using MeLlama.Data.Datasets;
using MeLlama.Data.Demo;
using MeLlama.Data.Prepare;
using MeLlama.Data.Shards;
using MeLlama.Tokenization;

namespace MeLlama.Cli.Commands;

/// <summary>
/// <c>mellama prepare [--config FILE|demo] [--out DIR] [--threads N] [--tokenizer SPEC]</c>: streams the config's
/// sources into per-domain Megatron shards with manifests (restartable: a rerun skips verified chunks).
/// Without --config (or with "demo") it prepares the built-in demo corpus.
/// </summary>
public static class PrepareCommand
{
    static readonly Option<string?> ConfigOption = new("--config", "-c") { Description = "Data config JSON (see configs/data/), or \"demo\" (default) for the built-in demo corpus" };
    static readonly Option<string?> OutOption = new("--out", "-o") { Description = "Output folder (default: out/data/<config name>)" };
    static readonly Option<int> ThreadsOption = new("--threads", "-j") { Description = "Tokenizer threads (default: all cores); output is identical for any number", DefaultValueFactory = _ => Environment.ProcessorCount };
    static readonly Option<string?> TokenizerOption = new("--tokenizer", "-t") { Description = "Override the config's tokenizer: \"gpt2\", a tokenizer.model or an HF folder" };

    public static Command Create()
    {
        var command = new Command("prepare", "Clean, de-duplicate and tokenize corpora into Megatron-format shards per domain (restartable)");
        command.Options.Add(ConfigOption);
        command.Options.Add(OutOption);
        command.Options.Add(ThreadsOption);
        command.Options.Add(TokenizerOption);
        command.SetAction((parse, cancel) => Task.Run(() => Execute(parse, cancel), CancellationToken.None));
        return command;
    }

    static int Execute(ParseResult parse, CancellationToken cancel)
    {
        using var log = LogSetup.Create(GlobalOptions.LogOptions(parse));
        var stdout = parse.InvocationConfiguration.Output;
        var stderr = parse.InvocationConfiguration.Error;
        string? configArg = parse.GetValue(ConfigOption);
        int threads = parse.GetValue(ThreadsOption);
        if (threads < 1)
        {
            stderr.WriteLine("mellama prepare: --threads must be ≥ 1");
            return 2;
        }

        DataConfig config;
        string outDir;
        try
        {
            if (configArg is null or "demo")
            {
                outDir = Path.GetFullPath(parse.GetValue(OutOption) ?? Path.Combine("out", "data", "demo"));
                string? shared = DemoCorpus.FindSharedCorpus();
                (config, bool usesShared) = DemoCorpus.Create(Path.Combine(outDir, "demo-input"), shared);
                log.Information(usesShared
                    ? "Demo corpus: the sample corpora in {Shared} (PubMedQA = biomedical; ACI-Bench + MTS-Dialog = clinical) and generated general text"
                    : "Demo corpus: {Shared} is absent, so a synthetic biomedical/clinical/general corpus is generated here (no real data)",
                    shared ?? Path.GetFullPath(Path.Combine("..", "shared", "data", "corpus")));
            }
            else
            {
                config = DataConfig.Load(configArg);
                outDir = Path.GetFullPath(parse.GetValue(OutOption) ?? Path.Combine("out", "data", config.Name));
            }
        }
        catch (Exception e)
        {
            return CommandFailures.Report(e, stderr, "prepare", log: log);
        }

        string tokenizerSpec = parse.GetValue(TokenizerOption) ?? config.Tokenizer;
        if (tokenizerSpec != "gpt2" && parse.GetValue(TokenizerOption) is null && !Path.IsPathRooted(tokenizerSpec))
            tokenizerSpec = Path.Combine(config.BaseDirectory, tokenizerSpec);
        ITextTokenizer tokenizer;
        try { tokenizer = TokenizerLoader.Load(tokenizerSpec); }
        catch (Exception e)
        {
            return CommandFailures.Report(e, stderr, $"prepare: cannot load tokenizer '{tokenizerSpec}'", log: log);
        }
        log.Information("Preparing {Name}: {Sources} source(s) → {Out} with {Tokenizer} (sha256 {Fingerprint}), {Threads} thread(s)",
            config.Name, config.Sources.Count, outDir, tokenizer.Name, tokenizer.Fingerprint, threads);

        var progress = new ProgressPrinter(stderr, live: !Console.IsErrorRedirected && ReferenceEquals(stderr, Console.Error), quiet: parse.GetValue(GlobalOptions.Quiet));
        PrepareResult result;
        try
        {
            result = PrepareRunner.Run(config, tokenizer, new PrepareOptions(outDir, threads)
            {
                Log = log,
                Progress = progress.Report,
                ProgressInterval = TimeSpan.FromSeconds(progress.Live ? 0.5 : 10),
            }, cancel);
        }
        catch (Exception e)
        {
            progress.End();
            int code = CommandFailures.Report(e, stderr, "prepare", readingInput: false, log: log);
            if (code != Training.Runtime.ExitCodes.BadInput) stderr.WriteLine("mellama prepare: completed chunks are kept; rerun the same command to continue");
            return code;
        }
        progress.End();
        if (result.ChunksReused > 0)
            log.Information("Reused {Reused} of {Chunks} chunk(s) verified from an earlier run", result.ChunksReused, result.Chunks);
        PrintSummary(stdout, result, config);
        return 0;
    }

    static void PrintSummary(TextWriter o, PrepareResult result, DataConfig config)
    {
        string Num(long v) => v.ToString("N0", CultureInfo.InvariantCulture);
        o.WriteLine();
        o.WriteLine($"{"domain",-11} {"sensitivity",-11} {"records",12} {"train docs",11} {"eval docs",10} {"train tokens",14} {"eval tokens",12} {"shards",6}  dropped");
        foreach (var m in result.Datasets)
        {
            long records = m.Sources.Sum(s => s.Records);
            var dropped = m.Sources.SelectMany(s => s.Dropped).GroupBy(kv => kv.Key).OrderBy(g => g.Key, StringComparer.Ordinal)
                .Select(g => $"{g.Key}={Num(g.Sum(kv => kv.Value))}");
            o.WriteLine($"{m.Domain,-11} {m.Sensitivity,-11} {Num(records),12} {Num(m.Train.Documents),11} {Num(m.Eval.Documents),10} {Num(m.Train.Tokens),14} {Num(m.Eval.Tokens),12} {m.Train.Shards.Count + m.Eval.Shards.Count,6}  {string.Join(", ", dropped)}");
        }
        double seconds = Math.Max(result.Elapsed.TotalSeconds, 1e-9);
        o.WriteLine();
        o.WriteLine($"{Num(result.TokensProcessed)} tokens from {result.TextBytesProcessed / 1e6:F1} MB of text in {result.Elapsed.TotalSeconds:F1} s " +
                    $"({result.TextBytesProcessed / 1e6 / seconds:F2} MB/s, {result.TokensProcessed / seconds:N0} tokens/s); {result.Chunks} chunk(s), {result.ChunksReused} reused.");
        o.WriteLine($"Datasets: {string.Join(", ", result.Datasets.Select(m => Path.Combine(result.OutputDirectory, m.Domain)))}");
        if (config.Mixture is { Count: > 0 } mix)
            o.WriteLine($"Intended mixture: {string.Join(" : ", mix.Select(kv => $"{kv.Key} {kv.Value.ToString(CultureInfo.InvariantCulture)}"))}");
        foreach (var m in result.Datasets)
            foreach (var s in m.Sources.Where(s => s.Problems.Count > 0))
                o.WriteLine($"  {s.Name}: {s.Problems.Count}{(s.Problems.Count >= SourceStats.MaxProblems ? "+" : "")} problem(s), first: {s.Problems[0].File}{(s.Problems[0].Line > 0 ? $" line {s.Problems[0].Line}" : "")}: {s.Problems[0].Reason} (all in {Path.Combine(m.Domain, DatasetManifest.FileName)})");
    }

    /// <summary>Progress on stderr: one rewritten line on a terminal, a plain line every 10 s otherwise. Counts only.</summary>
    sealed class ProgressPrinter(TextWriter stderr, bool live, bool quiet)
    {
        readonly object _gate = new();
        bool _open;
        public bool Live => live;

        public void Report(PrepareProgress p)
        {
            if (quiet) return;
            double s = Math.Max(p.Elapsed.TotalSeconds, 1e-9);
            string line = string.Create(CultureInfo.InvariantCulture,
                $"[prepare] {p.Elapsed:hh\\:mm\\:ss}  records {p.Records:N0}  docs {p.Documents:N0}  tokens {p.Tokens:N0}  text {p.TextBytes / 1e6:F1} MB  {p.TextBytes / 1e6 / s:F2} MB/s  {p.Tokens / s:N0} tok/s  chunks {p.Chunks}{(p.Finished ? "  done" : "")}");
            lock (_gate)
            {
                if (live) { stderr.Write("\r" + line.PadRight(120)); _open = true; }
                else stderr.WriteLine(line);
            }
        }

        public void End()
        {
            lock (_gate) if (_open) { stderr.WriteLine(); _open = false; }
        }
    }
}
