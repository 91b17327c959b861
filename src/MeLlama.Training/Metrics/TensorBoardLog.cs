using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Training.Metrics;

/// <summary>TensorBoard event files under <c>RUN/tensorboard/</c> (TorchSharp's SummaryWriter).</summary>
public sealed class TensorBoardLog(string dir) : IDisposable
{
    readonly SummaryWriter _writer = utils.tensorboard.SummaryWriter(dir, "", false);

    public void Write(MetricRecord r)
    {
        int step = checked((int)r.Step);
        if (r.Kind == "eval")
        {
            if (r.Loss is { } el) _writer.add_scalar($"eval/{r.Domain}/loss", (float)el, step);
            return;
        }
        if (r.Loss is { } loss) _writer.add_scalar("train/loss", (float)loss, step);
        if (r.Lr is { } lr) _writer.add_scalar("train/lr", (float)lr, step);
        if (r.GradNorm is { } gn) _writer.add_scalar("train/grad_norm", (float)gn, step);
        if (r.TokensPerSecond is { } tps) _writer.add_scalar("perf/tokens_per_s", (float)tps, step);
        if (r.Mfu is { } mfu) _writer.add_scalar("perf/mfu", (float)mfu, step);
        if (r.MemoryMb is { } mem) _writer.add_scalar("perf/memory_mb", (float)mem, step);
    }

    public void Dispose() { }
}
