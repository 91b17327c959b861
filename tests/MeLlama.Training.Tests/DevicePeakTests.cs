using MeLlama.Training.Metrics;

namespace MeLlama.Training.Tests;

/// <summary>MFU against a peak that was measured while the machine was busy (the demo once printed MFU 100.4%).</summary>
public class DevicePeakTests
{
    [Fact]
    public void APeakBelowWhatTrainingAchievesIsMeasuredAgainAndTheLargerKept()
    {
        var measurements = new Queue<double>([20.0, 15.0]);
        var remeasured = new List<(double Before, double Again)>();
        var peak = new DevicePeak(10.0, () => measurements.Dequeue(), (b, a) => remeasured.Add((b, a)));
        Assert.Equal(0.5, peak.Mfu(5.0));          // below the peak: nothing measured
        Assert.Empty(remeasured);
        Assert.Equal(0.75, peak.Mfu(15.0));        // above 10: measured again (20), MFU against 20
        Assert.Equal([(10.0, 20.0)], remeasured);
        Assert.Equal(20.0, peak.Flops);
        Assert.Equal(0.9, peak.Mfu(18.0), 12);     // below the new peak: not measured again
        Assert.Single(remeasured);
    }

    [Fact]
    public void RemeasuringStopsAfterThreeTriesAndReportsWhatItHas()
    {
        int calls = 0;
        var peak = new DevicePeak(10.0, () => { calls++; return 9.0; });
        Assert.Equal(1.2, peak.Mfu(12.0), 12);     // every re-measure is lower: the first value stays
        Assert.Equal(DevicePeak.MaxRemeasures, calls);
        Assert.Equal(1.3, peak.Mfu(13.0), 12);
        Assert.Equal(DevicePeak.MaxRemeasures, calls);
    }
}
