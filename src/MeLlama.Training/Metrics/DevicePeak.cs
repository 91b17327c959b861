namespace MeLlama.Training.Metrics;

/// <summary>
/// The device's matmul peak that MFU is reported against. It is measured once at start (best of three trials), but
/// on a shared machine that measurement can land in a busy moment and the run then prints MFU above 100%. When a
/// step's achieved FLOP/s exceed the peak, the peak is measured again (at most <see cref="MaxRemeasures"/> times)
/// and the larger value kept; what is reported stays honest: achieved over the best peak seen.
/// </summary>
public sealed class DevicePeak(double measured, Func<double> measure, Action<double, double>? onRemeasured = null)
{
    public const int MaxRemeasures = 3;
    int _remeasures;

    /// <summary>Best peak seen, FLOP/s.</summary>
    public double Flops { get; private set; } = measured;

    /// <summary>MFU of <paramref name="achievedFlops"/>, re-measuring the peak first when it is exceeded.</summary>
    public double Mfu(double achievedFlops)
    {
        while (achievedFlops > Flops && _remeasures < MaxRemeasures)
        {
            _remeasures++;
            double before = Flops, again = measure();
            if (again > Flops) Flops = again;
            onRemeasured?.Invoke(before, again);
        }
        return achievedFlops / Flops;
    }
}
