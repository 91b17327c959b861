namespace MeLlama.Training.Optim;

/// <summary>
/// Linear warmup then cosine decay to a floor, as a pure function of the step (so resuming needs only the step
/// counter). Step numbering is 0-based: the lr for the update that produces step s+1 is <c>LrAt(s)</c>.
/// </summary>
public sealed record CosineSchedule(double PeakLr, double MinLr, long WarmupSteps, long TotalSteps)
{
    public static CosineSchedule Create(double peakLr, double? minLr, double minLrRatio, double warmupRatio, long totalSteps)
    {
        if (totalSteps <= 0) throw new ArgumentOutOfRangeException(nameof(totalSteps));
        long warmup = (long)Math.Ceiling(warmupRatio * totalSteps);
        return new CosineSchedule(peakLr, minLr ?? peakLr * minLrRatio, Math.Min(warmup, totalSteps), totalSteps);
    }

    public double LrAt(long step)
    {
        if (step < WarmupSteps) return PeakLr * (step + 1) / WarmupSteps;
        long decaySteps = TotalSteps - WarmupSteps;
        if (decaySteps <= 0) return PeakLr;
        double progress = Math.Clamp((double)(step - WarmupSteps) / decaySteps, 0, 1);
        return MinLr + 0.5 * (PeakLr - MinLr) * (1 + Math.Cos(Math.PI * progress));
    }
}
