using MeLlama.TestSupport;

namespace MeLlama.Distributed.Tests;

public class JobSecretTests
{
    [Fact]
    public void SameStringGivesSameKeyAndDifferentStringsDiffer()
    {
        var a = JobSecret.FromString("0123456789abcdef-one");
        Assert.Equal(a.Fingerprint, JobSecret.FromString("0123456789abcdef-one").Fingerprint);
        Assert.NotEqual(a.Fingerprint, JobSecret.FromString("0123456789abcdef-two").Fingerprint);
        Assert.True(a.Key.SequenceEqual(JobSecret.FromString("0123456789abcdef-one").Key));
    }

    [Fact]
    public void GeneratedSecretsAreFreshAndRoundTripThroughTheEnvironmentValue()
    {
        var (first, value) = JobSecret.Generate();
        var (second, _) = JobSecret.Generate();
        Assert.NotEqual(first.Fingerprint, second.Fingerprint);
        Assert.Equal(first.Fingerprint, JobSecret.FromVariables(new Dictionary<string, string> { [JobSecret.EnvVar] = value })!.Fingerprint);
    }

    [Fact]
    public void ShortSecretsAreRefused() =>
        Assert.Throws<DistributedEnvironmentException>(() => JobSecret.FromString("short"));

    [Fact]
    public void AbsentSecretIsNull() => Assert.Null(JobSecret.FromVariables(new Dictionary<string, string>()));

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void SecretFileIsPerJobAndMustBeOwnerOnly()
    {
        using var dir = new TempDir();
        string file = dir["secret"];
        File.WriteAllText(file, "a-long-user-secret-on-the-shared-filesystem\n");
        File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var job1 = JobSecret.FromVariables(new Dictionary<string, string> { [JobSecret.FileEnvVar] = file, ["SLURM_JOB_ID"] = "1" })!;
        var job1Again = JobSecret.FromVariables(new Dictionary<string, string> { [JobSecret.FileEnvVar] = file, ["SLURM_JOB_ID"] = "1" })!;
        var job2 = JobSecret.FromVariables(new Dictionary<string, string> { [JobSecret.FileEnvVar] = file, ["SLURM_JOB_ID"] = "2" })!;
        Assert.Equal(job1.Fingerprint, job1Again.Fingerprint);
        Assert.NotEqual(job1.Fingerprint, job2.Fingerprint);

        File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead);
        var e = Assert.Throws<DistributedEnvironmentException>(() => JobSecret.FromVariables(new Dictionary<string, string> { [JobSecret.FileEnvVar] = file }));
        Assert.Contains("chmod 600", e.Message);
    }
}
