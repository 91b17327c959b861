using System.Security.Cryptography;
using System.Text;

namespace MeLlama.Distributed;

/// <summary>
/// The shared secret that lets the ranks of one job recognise each other: the rendezvous store and the
/// ring connections accept only peers that prove knowledge of it (HMAC challenge-response), so another
/// user's process on a shared cluster cannot join, read the NCCL id or inject gradients.
/// <list type="bullet">
/// <item><c>MELLAMA_JOB_SECRET</c>: the secret itself (at least 16 characters). <c>mellama launch</c> generates
/// one per launch; the sbatch scripts generate one per job and srun passes it to every task.</item>
/// <item><c>MELLAMA_JOB_SECRET_FILE</c>: a file (owner-only permissions, e.g. in $HOME on the shared
/// file system) holding a long-lived user secret; the job key is derived from it and SLURM_JOB_ID, so
/// every job gets a different key.</item>
/// </list>
/// Only authentication: traffic after the handshake is not encrypted.
/// </summary>
public sealed class JobSecret
{
    public const string EnvVar = "MELLAMA_JOB_SECRET";
    public const string FileEnvVar = "MELLAMA_JOB_SECRET_FILE";
    public const int MinLength = 16;

    readonly byte[] key;

    JobSecret(byte[] key) => this.key = key;

    internal ReadOnlySpan<byte> Key => key;

    /// <summary>Short hash of the key for logs: equal on all ranks of a job, reveals nothing.</summary>
    public string Fingerprint => Convert.ToHexStringLower(SHA256.HashData(key))[..12];

    /// <summary>A fresh random secret and the string to put in <see cref="EnvVar"/> for the child processes.</summary>
    public static (JobSecret Secret, string EnvironmentValue) Generate()
    {
        string value = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
        return (FromString(value), value);
    }

    public static JobSecret FromString(string secret)
    {
        ArgumentNullException.ThrowIfNull(secret);
        if (secret.Length < MinLength)
            throw new DistributedEnvironmentException($"{EnvVar} is too short ({secret.Length} characters; use at least {MinLength}, e.g. `openssl rand -hex 32`)");
        return new JobSecret(SHA256.HashData(Encoding.UTF8.GetBytes("mellama-job-secret-v1\0" + secret)));
    }

    /// <summary>The secret from <see cref="EnvVar"/> or <see cref="FileEnvVar"/>; null when neither is set.</summary>
    public static JobSecret? FromVariables(IReadOnlyDictionary<string, string> vars)
    {
        if (vars.TryGetValue(EnvVar, out var direct) && !string.IsNullOrEmpty(direct)) return FromString(direct);
        if (!vars.TryGetValue(FileEnvVar, out var file) || string.IsNullOrEmpty(file)) return null;
        if (!File.Exists(file)) throw new DistributedEnvironmentException($"{FileEnvVar}={file}: no such file");
        if (!OperatingSystem.IsWindows())
        {
            var mode = File.GetUnixFileMode(file);
            if ((mode & (UnixFileMode.GroupRead | UnixFileMode.OtherRead | UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
                throw new DistributedEnvironmentException($"{FileEnvVar}={file} is readable or writable by other users; run `chmod 600 {file}`");
        }
        string content = File.ReadAllText(file).Trim();
        if (content.Length < MinLength)
            throw new DistributedEnvironmentException($"{FileEnvVar}={file} holds fewer than {MinLength} characters");
        // Per-job key: a leaked key of one job (e.g. from a core dump) does not open later jobs.
        string jobId = vars.TryGetValue("SLURM_JOB_ID", out var id) ? id : "";
        var perJob = HMACSHA256.HashData(Encoding.UTF8.GetBytes(content), Encoding.UTF8.GetBytes("mellama-job:" + jobId));
        return FromString(Convert.ToHexStringLower(perJob));
    }

    public static JobSecret FromEnvironment() =>
        FromVariables(EnvironmentVariables.Snapshot())
        ?? throw new DistributedEnvironmentException(
            $"a multi-process job needs a job secret: set {EnvVar} to the same random string on every rank " +
            $"(`mellama launch` and scripts/slurm/*.sbatch do this), or {FileEnvVar} to an owner-only file on the shared file system");
}
