using System.Diagnostics;
using System.Text.Json;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Engine;
using MeLlama.Training.Metrics;
using MeLlama.Training.Optim;
using MeLlama.Training.Sources;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Training.Loop;

/// <summary>The numbers of a recipe that the loop reads (pretraining and fine-tuning recipes both have them).</summary>
public sealed record LoopSettings
{
    public required string RunDir { get; init; }
    public required int MicroBatch { get; init; }
    public required int SeqLen { get; init; }
    /// <summary>Micro-batches per optimizer step on this rank.</summary>
    public required int GradAccum { get; init; }
    public required long TotalSteps { get; init; }
    public required int MaxBadSteps { get; init; }
    public required int LogInterval { get; init; }
    /// <summary>Steps between held-out evaluations (0: only at the start and the end).</summary>
    public required int EvalInterval { get; init; }
    public required int CheckpointInterval { get; init; }
    public required int KeepLast { get; init; }
    /// <summary>Write a checkpoint when the run completes (a stop for any other reason always saves).</summary>
    public bool SaveFinal { get; init; } = true;
    public required string Precision { get; init; }
    public bool Tensorboard { get; init; }
    /// <summary>What <see cref="TrainOutcome.Tokens"/> counts, for the closing message.</summary>
    public string TokenUnit { get; init; } = "tokens";
}

/// <summary>One held-out set's summed loss for one evaluation.</summary>
public readonly record struct EvalResult(string Domain, EvalSums Sums);

/// <summary>What differs between kinds of runs, plugged into <see cref="TrainLoop"/>.</summary>
public sealed record LoopParts
{
    public required ITrainStep Engine { get; init; }
    /// <summary>Where micro-batches come from; its <see cref="ISampleSource.State"/> goes into every checkpoint.</summary>
    public required ISampleSource Source { get; init; }
    public required CosineSchedule Schedule { get; init; }
    public required Device Device { get; init; }
    /// <summary>What one step adds to the run's token count (pretraining: the global batch; fine-tuning: the trained assistant tokens).</summary>
    public required Func<StepResult, long> TokensOf { get; init; }
    /// <summary>Tokens one step processes, for tokens/s.</summary>
    public required long ProcessedTokensPerStep { get; init; }
    /// <summary>Runs the held-out evaluation (same result on every rank); null when there is nothing to evaluate.</summary>
    public Func<IReadOnlyList<EvalResult>>? Evaluate { get; init; }
    /// <summary>Rank 0's part of a checkpoint besides the engine state, the trainer state and the RNG: configs, extra weights.</summary>
    public required Action<string> WriteRunFiles { get; init; }
    /// <summary>Called before each step with its number (e.g. to reseed dropout).</summary>
    public Action<long>? BeforeStep { get; init; }
    /// <summary>Model FLOPs utilisation at a given tokens/s, when the device peak is known.</summary>
    public Func<double, double?>? Mfu { get; init; }
    /// <summary>A few words for the step log line (e.g. the epoch), or null.</summary>
    public Func<string>? StepNote { get; init; }
}

/// <summary>
/// The step loop every trainer runs, read top to bottom in <see cref="Run"/>: an evaluation at the start, then per step
/// (1) stop on a signal or a nearly spent wall-clock budget, agreed across ranks, (2) draw the micro-batches and step the
/// engine, (3) count non-finite steps and stop when too many come in a row, (4) metrics and the log line, (5) periodic
/// evaluation and checkpoints; at the end a last evaluation and the final checkpoint. What is trained, how batches are
/// made, what a checkpoint holds besides the engine state and what evaluation runs come in through <see cref="LoopParts"/>.
/// <para>On several ranks every rank runs this loop in lockstep: every stop decision is taken on values reduced across
/// ranks, checkpoints are written by all ranks together, and only rank 0 writes metrics, TensorBoard events and the
/// progress line.</para>
/// </summary>
public sealed class TrainLoop(RunStart start, LoopSettings settings, LoopParts parts)
{
    readonly TrainingWorld _world = start.World;
    readonly Serilog.ILogger _log = start.Log;
    readonly TimeBudget? _budget = start.Controls.TimeLimit is { } limit ? new TimeBudget(limit, start.StartUtc) : null;
    readonly ProgressLine _progress = new(start.Controls.Progress && start.World.IsRoot);
    readonly Dictionary<string, double> _lastEval = [];
    Dictionary<string, double> _firstEval = [];
    MetricsLog? _metrics;
    TensorBoardLog? _tensorboard;

    long _step = start.State?.Step ?? 0;
    long _tokens = start.State?.Tokens ?? 0;
    long _skippedTotal = start.State?.SkippedSteps ?? 0;
    int _consecutiveBad = start.State?.ConsecutiveBadSteps ?? 0;
    readonly double _elapsedBefore = start.State?.ElapsedSeconds ?? 0;
    string? _lastCheckpoint = start.ResumeFrom?.Dir;
    long _lastSavedStep = start.ResumeFrom != null ? start.State?.Step ?? 0 : -1;
    TimeSpan _saveTime = TimeSpan.Zero;

    double Elapsed() => _elapsedBefore + start.Wall.Elapsed.TotalSeconds;

    public TrainOutcome Run()
    {
        var s = settings;
        // One copy of what describes the run as a whole: rank 0's.
        using var metrics = _world.IsRoot ? new MetricsLog(Path.Combine(s.RunDir, "metrics.jsonl"), _step) : null;
        using var tensorboard = s.Tensorboard && _world.IsRoot ? new TensorBoardLog(Path.Combine(s.RunDir, "tensorboard")) : null;
        (_metrics, _tensorboard) = (metrics, tensorboard);
        _firstEval = metrics != null ? ReadFirstEval(metrics.Path) : [];

        if (_step == 0 && start.ResumeFrom == null) Evaluate();

        var microBatches = new Tensor[s.GradAccum];
        var buffer = new long[s.MicroBatch * (s.SeqLen + 1)];
        var stepTimer = new Stopwatch();
        var recentStep = TimeSpan.Zero;
        long lastLoggedStep = _step;
        var logTimer = Stopwatch.StartNew();
        while (_step < s.TotalSteps)
        {
            if (StopRequested(recentStep) is { } stop) return stop;

            stepTimer.Restart();
            double lr = parts.Schedule.LrAt(_step);
            parts.BeforeStep?.Invoke(_step);
            StepResult result;
            using (var scope = NewDisposeScope())
            {
                for (int i = 0; i < s.GradAccum; i++)
                {
                    parts.Source.NextBatch(s.MicroBatch, buffer);
                    microBatches[i] = torch.tensor(buffer, [s.MicroBatch, s.SeqLen + 1]);
                }
                result = parts.Engine.Step(microBatches, lr);
            }
            Throughput.Sync(parts.Device);
            _step++;
            _tokens += parts.TokensOf(result);
            recentStep = stepTimer.Elapsed;
            if (CountBadStep(result) is { } diverged) return diverged;

            double tokensPerSecond = parts.ProcessedTokensPerStep / Math.Max(recentStep.TotalSeconds, 1e-9);
            double? mfu = parts.Mfu?.Invoke(tokensPerSecond);
            if (_world.IsRoot && (_step % s.LogInterval == 0 || _step == s.TotalSteps))
            {
                var record = new MetricRecord
                {
                    Step = _step, Tokens = _tokens, Loss = result.Loss, Lr = lr, GradNorm = result.GradNorm, TokensPerSecond = tokensPerSecond, Mfu = mfu,
                    MemoryMb = Throughput.ProcessMemoryMb(), SkippedSteps = _skippedTotal, ElapsedSeconds = Elapsed(), Time = DateTimeOffset.UtcNow,
                };
                Record(record);
                var eta = TimeSpan.FromSeconds(recentStep.TotalSeconds * (s.TotalSteps - _step));
                if (_progress.Enabled) _progress.Draw(_step, s.TotalSteps, result.Loss, lr, tokensPerSecond, eta, mfu);
                else if (logTimer.Elapsed.TotalSeconds >= 10 || _step == s.TotalSteps || _step - lastLoggedStep >= 100 || _step <= 1)
                {
                    _log.Information("Step {Step}/{Total}{Note} loss {Loss:F4} lr {Lr:E2} grad-norm {GradNorm:F3} {TokensPerSecond:F0} tok/s MFU {Mfu} mem {Mem:F0} MiB ETA {Eta}",
                        _step, s.TotalSteps, parts.StepNote is { } note ? " " + note() : "", result.Loss, lr, result.GradNorm, tokensPerSecond,
                        mfu is { } m ? $"{m * 100:F1}%" : "n/a", record.MemoryMb, ProgressLine.Format(eta));
                    logTimer.Restart();
                    lastLoggedStep = _step;
                }
            }
            start.Controls.AfterStep?.Invoke(_step);

            if (s.EvalInterval > 0 && _step % s.EvalInterval == 0 && _step < s.TotalSteps) Evaluate();
            if (_step % s.CheckpointInterval == 0 && _step < s.TotalSteps) Save("interval");
        }
        Evaluate();
        return Finish(TrainEnd.Completed, "final", $"finished {_step} steps ({_tokens:N0} {s.TokenUnit})");
    }

    /// <summary>A signal or a nearly spent budget on any rank stops every rank at this same step (max over ranks).</summary>
    TrainOutcome? StopRequested(TimeSpan recentStep)
    {
        string? localSignal = start.Controls.Signals?.Reason;
        bool localBudget = _budget != null && recentStep > TimeSpan.Zero && _budget.ShouldStop(DateTime.UtcNow, recentStep, _saveTime);
        var stop = _world.Max(SignalCode(localSignal), localBudget ? 1 : 0);
        if (stop[0] > 0)
        {
            string signal = SignalName((int)stop[0], localSignal);
            string where = localSignal != null ? "" : " (on another rank)";
            _log.Warning("Received {Signal}{Where}: saving at step {Step} and exiting with code {Code} so the job can be requeued", signal, where, _step, Runtime.ExitCodes.Preempted);
            return Finish(TrainEnd.Preempted, "preempted-" + signal.ToLowerInvariant(), $"stopped by {signal} at step {_step}");
        }
        if (stop[1] > 0)
        {
            _log.Warning("Wall-clock budget {Limit} nearly spent{Where}: saving at step {Step} and exiting with code {Code}", _budget?.Limit, localBudget ? "" : " on another rank", _step, Runtime.ExitCodes.Preempted);
            return Finish(TrainEnd.TimeLimit, "time-limit", $"time limit reached at step {_step}");
        }
        return null;
    }

    /// <summary>Counts a skipped (non-finite) step; the outcome when too many came in a row.</summary>
    TrainOutcome? CountBadStep(StepResult result)
    {
        // The engine reduces loss and gradient norm, so ranks should agree already; reducing the verdict makes the
        // skip counters, and with them the divergence stop, identical on every rank by construction.
        bool skipped = _world.IsDistributed ? _world.Any(result.Skipped) : result.Skipped;
        if (!skipped)
        {
            _consecutiveBad = 0;
            return null;
        }
        _skippedTotal++;
        _consecutiveBad++;
        _progress.Break();
        _log.Warning("Step {Step}: non-finite {What} (loss {Loss}, grad norm {Norm}); update skipped ({Consecutive} in a row, {Total} in total)",
            _step, double.IsFinite(result.Loss) ? "gradient" : "loss", result.Loss, result.GradNorm, _consecutiveBad, _skippedTotal);
        if (_consecutiveBad < settings.MaxBadSteps) return null;
        string message = $"{_consecutiveBad} consecutive steps had a non-finite loss or gradient (steps {_step - _consecutiveBad + 1}..{_step}); " +
                         "the weights and optimizer state are those of the last good step. Lower optimizer.lr, check the data, or resume to continue past these batches.";
        _log.Error("Stopping: {Message}", message);
        return Finish(TrainEnd.Diverged, "diverged", message);
    }

    void Record(MetricRecord r)
    {
        _metrics?.Write(r);
        _tensorboard?.Write(r);
    }

    void Evaluate()
    {
        if (parts.Evaluate is null) return;
        _progress.Break();
        foreach (var (domain, sums) in parts.Evaluate())
        {
            if (sums.Tokens == 0) continue;
            double loss = sums.MeanLoss;
            _lastEval[domain] = loss;
            _firstEval.TryAdd(domain, loss);
            Record(new MetricRecord { Kind = "eval", Step = _step, Tokens = _tokens, Domain = domain, Loss = loss, Perplexity = Math.Exp(loss),
                EvalTokens = sums.Tokens, ElapsedSeconds = Elapsed(), Time = DateTimeOffset.UtcNow });
            if (_world.IsRoot) _log.Information("Eval step {Step} {Domain}: loss {Loss:F4} (ppl {Ppl:F2}, {Tokens:N0} tokens)", _step, domain, loss, Math.Exp(loss), sums.Tokens);
        }
    }

    string Save(string reason)
    {
        _progress.Break();
        var sw = Stopwatch.StartNew();
        var schedule = parts.Schedule;
        var trainerState = new TrainerState
        {
            Step = _step, Tokens = _tokens, OptimizerSteps = parts.Engine.OptimizerSteps, SkippedSteps = _skippedTotal,
            ConsecutiveBadSteps = _consecutiveBad, TotalSteps = settings.TotalSteps, Sampler = parts.Source.State.DeepClone(), ElapsedSeconds = Elapsed(),
            Precision = settings.Precision, Reason = reason, WorldSize = _world.Size,
            Schedule = new ScheduleState { PeakLr = schedule.PeakLr, MinLr = schedule.MinLr, WarmupSteps = schedule.WarmupSteps, TotalSteps = schedule.TotalSteps },
        };
        // Every rank writes its part of the engine state into the shared folder; rank 0 the run's metadata.
        string dir = start.Store.SaveCoordinated(_step, _world, parts.Engine.SaveState, tmp =>
        {
            parts.WriteRunFiles(tmp);
            RngCheckpoint.Save(tmp);
            File.WriteAllText(Path.Combine(tmp, CheckpointFiles.TrainerState), JsonSerializer.Serialize(trainerState, TrainerStateJson.Default.TrainerState));
        });
        if (_world.IsRoot) start.Store.Prune(settings.KeepLast);
        _saveTime = sw.Elapsed;
        _lastCheckpoint = dir;
        _lastSavedStep = _step;
        _log.Information("Saved checkpoint {Checkpoint} ({Reason}, {Seconds:F1} s)", dir, reason, sw.Elapsed.TotalSeconds);
        return dir;
    }

    TrainOutcome Finish(TrainEnd end, string reason, string message)
    {
        if (_lastSavedStep != _step && (end != TrainEnd.Completed || settings.SaveFinal)) Save(reason);
        _progress.Break();
        return new TrainOutcome(end, _step, _tokens, _lastCheckpoint, _firstEval, _lastEval, message);
    }

    // Stop reasons travel between ranks as numbers (a max-reduction); the larger code wins when ranks got different signals.
    static double SignalCode(string? reason) => reason switch
    {
        null => 0,
        "SIGTERM" => 4,
        "SIGUSR1" => 3,
        "SIGINT" => 2,
        _ => 1, // a request from inside the process (tests, library callers)
    };

    static string SignalName(int code, string? local) =>
        local != null && SignalCode(local) == code ? local : code switch { 4 => "SIGTERM", 3 => "SIGUSR1", 2 => "SIGINT", _ => "stop" };

    static Dictionary<string, double> ReadFirstEval(string metricsPath)
    {
        var first = new Dictionary<string, double>();
        if (!File.Exists(metricsPath)) return first;
        foreach (var r in MetricsLog.Read(metricsPath))
            if (r is { Kind: "eval", Domain: { } d, Loss: { } l }) first.TryAdd(d, l);
        return first;
    }
}
