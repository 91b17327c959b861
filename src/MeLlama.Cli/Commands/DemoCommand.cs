using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using MeLlama.Core.Logging;
using MeLlama.Data.Demo;
using MeLlama.Data.Prepare;
using MeLlama.Data.Sampling;
using MeLlama.Model;
using MeLlama.Tokenization;
using MeLlama.Training.Config;
using MeLlama.Training.Export;
using MeLlama.Training.Metrics;
using MeLlama.Training.Plotting;
using MeLlama.Training.Runtime;
using Serilog;
using static TorchSharp.torch;

namespace MeLlama.Cli.Commands;

/// <summary>
/// `mellama demo`: the whole continual-pretraining path on a laptop in minutes: prepare the built-in demo corpus,
/// pretrain the demo model (recipe configs/demo.json), export it as a Hugging Face folder, score the held-out sets
/// with the exported model and plot the curves. Re-running continues where an interrupted run stopped.
/// </summary>
public static class DemoCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out", "-o") { Description = "Folder for everything the demo writes", DefaultValueFactory = _ => Path.Combine("out", "demo") };
        var set = new Option<string[]>("--set") { Description = "Override a key of the demo recipe (e.g. --set max_steps=100)" };
        var threads = new Option<int>("--threads") { Description = "CPU threads for preparing and training (0 = the recipe's)", DefaultValueFactory = _ => 0 };
        var command = new Command("demo", "Prepare the built-in corpus, pretrain the demo model, export it to an HF folder, score held-out loss and plot (a few minutes on 2 CPU cores)")
        {
            output, set, threads,
        };
        command.SetAction(parse =>
        {
            string root = Path.GetFullPath(parse.GetValue(output)!);
            var logOptions = GlobalOptions.LogOptions(parse);
            logOptions = logOptions with { JsonFile = logOptions.JsonFile ?? Path.Combine(root, "logs", "demo.jsonl") };
            using var log = LogSetup.Create(logOptions);
            return Run(root, parse.GetValue(set) ?? [], parse.GetValue(threads), log, progress: !parse.GetValue(GlobalOptions.Quiet));
        });
        return command;
    }

    static int Run(string root, string[] userOverrides, int threads, ILogger log, bool progress)
    {
        var total = Stopwatch.StartNew();
        string dataDir = Path.Combine(root, "data"), runDir = Path.Combine(root, "run"), hfDir = Path.Combine(root, "hf-model");
        TrainConfig config;
        try
        {
            var overrides = new List<string> { "run_dir=" + Json(runDir) };
            var recipe = ConfigLoader.Load("demo");
            for (int i = 0; i < recipe.Data.Datasets.Count; i++)
                overrides.Add($"data.datasets.{i}.path=" + Json(Path.Combine(dataDir, recipe.Data.Datasets[i].Name)));
            if (threads > 0) overrides.Add($"threads={threads}");
            overrides.AddRange(userOverrides);
            config = ConfigLoader.Load("demo", overrides);
        }
        catch (Exception e)
        {
            return CommandFailures.Report(e, log, "demo", readingInput: true);
        }

        // 1. Prepare the built-in corpus (resumable; a finished preparation is reused).
        log.Information("[1/5] Preparing the built-in demo corpus into {Data}", dataDir);
        var tokenizer = TokenizerLoader.Load(config.Model.Tokenizer ?? "gpt2");
        var (dataConfig, usesShared) = DemoCorpus.Create(Path.Combine(root, "corpus"), DemoCorpus.FindSharedCorpus());
        var prepared = PrepareRunner.Run(dataConfig, tokenizer, new PrepareOptions(dataDir, threads > 0 ? threads : Math.Max(1, config.Threads)) { Log = log });
        log.Information("Prepared {Domains} domains ({Source}), {Tokens:N0} tokens in {Seconds:F0} s",
            prepared.Datasets.Count, usesShared ? "sample corpora from ../shared" : "synthetic corpus", prepared.Datasets.Sum(d => d.Train.Tokens + d.Eval.Tokens), prepared.Elapsed.TotalSeconds);

        // 2. Pretrain.
        log.Information("[2/5] Pretraining the demo model into {Run}", runDir);
        int code = PretrainCommand.Run(config, log, limit: null, resume: true, progress);
        if (code != ExitCodes.Completed)
        {
            log.Warning("Training stopped with exit code {Code}; run `mellama demo --out {Root}` again to continue", code, root);
            return code;
        }

        // 3. Export.
        log.Information("[3/5] Exporting the final checkpoint to a Hugging Face folder");
        string exported = HfExporter.Export(runDir, hfDir, ScalarType.Float32, log: log);

        // 4. Score held-out text with the exported model (independently of the trainer).
        log.Information("[4/5] Scoring held-out sets with the exported model");
        var first = MetricsLog.Read(Path.Combine(runDir, "metrics.jsonl")).Where(r => r is { Kind: "eval", Step: 0, Loss: not null })
            .GroupBy(r => r.Domain!).ToDictionary(g => g.Key, g => g.First().Loss!.Value);
        var summary = new List<string>();
        bool learned = true;
        using (var model = HfCheckpoint.LoadModel(exported))
        {
            model.eval();
            foreach (var domain in config.Data.Datasets)
            {
                double loss = HeldOutLoss(model, domain.Path, config.SeqLen, config.Eval.Batches * config.MicroBatch);
                if (double.IsNaN(loss)) continue;
                string start = first.TryGetValue(domain.Name, out var f) ? f.ToString("F3", CultureInfo.InvariantCulture) : "?";
                learned &= first.TryGetValue(domain.Name, out var f2) && loss < f2 - 0.5;
                summary.Add($"  {domain.Name,-12} held-out loss {start} at step 0 → {loss.ToString("F3", CultureInfo.InvariantCulture)} after training (exported model)");
            }
        }

        // 5. Plot.
        log.Information("[5/5] Plotting");
        var plots = RunPlotter.Plot(runDir);

        Console.WriteLine();
        Console.WriteLine($"Demo finished in {total.Elapsed.TotalMinutes:F1} min.");
        foreach (var line in summary) Console.WriteLine(line);
        Console.WriteLine($"  prepared data   {dataDir}");
        Console.WriteLine($"  run folder      {runDir}  (checkpoints/, metrics.jsonl, tensorboard/, logs/)");
        Console.WriteLine($"  HF model        {exported}");
        Console.WriteLine($"  plots           {string.Join(", ", plots)}");
        Console.WriteLine($"  logs            {Path.Combine(root, "logs")}");
        if (!learned)
        {
            log.Error("Held-out loss did not fall clearly below its start");
            return ExitCodes.Failed;
        }
        return 0;
    }

    /// <summary>Mean next-token loss over the first <paramref name="maxSamples"/> held-out samples, via score-style log-probs.</summary>
    static double HeldOutLoss(LlamaForCausalLM model, string datasetPath, int seqLen, int maxSamples)
    {
        using var heldOut = HeldOutSamples.Open(datasetPath, seqLen);
        long n = Math.Min(heldOut.Count, maxSamples);
        if (n == 0) return double.NaN;
        double sum = 0;
        long count = 0;
        var sample = new long[seqLen + 1];
        for (long i = 0; i < n; i++)
        {
            heldOut.Read(i, sample);
            foreach (var lp in Scoring.NextTokenLogProbs(model, sample.Select(t => (int)t).ToArray())) { sum -= lp; count++; }
        }
        return sum / count;
    }

    static string Json(string s) => System.Text.Json.JsonSerializer.Serialize(s);
}
