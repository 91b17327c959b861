using System.Globalization;
using System.Net;
using Serilog;

namespace MeLlama.Distributed;

public enum CollectiveBackend
{
    /// <summary>Single process when the world has one rank; NCCL when CUDA is available; TCP otherwise.</summary>
    Auto,
    Single,
    Tcp,
    Nccl,
}

/// <summary>Settings of a communicator. Defaults suit training; tests shorten the timeouts.</summary>
public sealed record CollectivesOptions
{
    /// <summary>Environment variable overriding <see cref="Timeout"/> (seconds).</summary>
    public const string TimeoutEnvVar = "MELLAMA_COLLECTIVE_TIMEOUT_S";

    /// <summary>Bound on each collective call (NCCL's and torch's default is 10-30 minutes: a 70B checkpoint save on one rank can hold the others that long).</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>Bound on rendezvous: reaching the store and every ring peer at start-up.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromMinutes(5);

    public CollectiveBackend Backend { get; init; } = CollectiveBackend.Auto;

    /// <summary>Name that keeps several communicators on one store apart (store keys are prefixed with it).</summary>
    public string Group { get; init; } = "default";

    /// <summary>The job secret; null reads it from the environment (<see cref="JobSecret.FromEnvironment"/>).</summary>
    public JobSecret? Secret { get; init; }

    /// <summary>CUDA device for NCCL; null derives it from the local rank.</summary>
    public int? CudaDevice { get; init; }

    /// <summary>Path of libnccl; null loads <c>libnccl.so.2</c> (or MELLAMA_NCCL_LIBRARY).</summary>
    public string? NcclLibrary { get; init; }

    /// <summary>Address other ranks use to reach this one's ring listener; null uses the interface that reaches rank 0.</summary>
    public IPAddress? AdvertiseAddress { get; init; }

    /// <summary>TCP backend: bytes received and reduced per step (reduction overlaps with the next segment's transfer).</summary>
    public int SegmentBytes { get; init; } = 1 << 20;

    /// <summary>TCP backend: kernel socket buffer size requested for ring connections.</summary>
    public int SocketBufferBytes { get; init; } = 4 << 20;

    public ILogger Logger { get; init; } = Serilog.Core.Logger.None;

    /// <summary>Defaults with <see cref="TimeoutEnvVar"/> applied.</summary>
    public static CollectivesOptions FromEnvironment()
    {
        var options = new CollectivesOptions();
        var s = Environment.GetEnvironmentVariable(TimeoutEnvVar);
        if (!string.IsNullOrWhiteSpace(s))
        {
            if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds) || seconds <= 0)
                throw new DistributedEnvironmentException($"{TimeoutEnvVar}='{s}' is not a positive number of seconds");
            options = options with { Timeout = TimeSpan.FromSeconds(seconds) };
        }
        var nccl = Environment.GetEnvironmentVariable("MELLAMA_NCCL_LIBRARY");
        if (!string.IsNullOrWhiteSpace(nccl)) options = options with { NcclLibrary = nccl };
        return options;
    }
}
