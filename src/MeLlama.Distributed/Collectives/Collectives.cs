using System.Net;
using MeLlama.Distributed.Nccl;
using MeLlama.Distributed.Net;
using MeLlama.Distributed.Store;
using MeLlama.Distributed.Tcp;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Distributed;

/// <summary>Creates the communicator a process should use, from its <see cref="DistributedEnvironment"/>.</summary>
public static class Collectives
{
    /// <summary>
    /// World size 1 → <see cref="SingleProcessCollectives"/>. Otherwise rank 0 starts the rendezvous store on
    /// MASTER_PORT, every rank joins it (authenticated with the job secret), and the backend connects:
    /// NCCL when <paramref name="device"/> is a CUDA device (or <see cref="CollectivesOptions.Backend"/> says so),
    /// TCP otherwise. Blocks until all ranks have joined or <see cref="CollectivesOptions.ConnectTimeout"/> passes.
    /// </summary>
    public static ICollectives Create(DistributedEnvironment env, CollectivesOptions? options = null, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(env);
        options ??= CollectivesOptions.FromEnvironment();
        var backend = options.Backend;
        if (backend == CollectiveBackend.Auto)
            backend = env.WorldSize == 1 ? CollectiveBackend.Single
                : device?.type == DeviceType.CUDA ? CollectiveBackend.Nccl : CollectiveBackend.Tcp;
        if (backend == CollectiveBackend.Single || (backend == CollectiveBackend.Tcp && env.WorldSize == 1))
        {
            if (env.WorldSize != 1) throw new DistributedEnvironmentException($"the single-process backend cannot serve a world of {env.WorldSize} ranks");
            return new SingleProcessCollectives(options.Timeout);
        }

        var log = options.Logger;
        // A one-rank world with a forced backend (e.g. an NCCL smoke test on one GPU) needs no launcher: make up the rest.
        var secret = options.Secret ?? (env.WorldSize == 1 && Environment.GetEnvironmentVariable(JobSecret.EnvVar) == null
            ? JobSecret.Generate().Secret : JobSecret.FromEnvironment());
        log.Information("Joining {Environment} with the {Backend} backend (job secret {Fingerprint})", env, backend, secret.Fingerprint);
        TcpStoreServer? server = env.Rank == 0 ? TcpStoreServer.Start(IPAddress.Any, env.MasterPort, secret, log) : null;
        int port = server?.EndPoint.Port ?? env.MasterPort;
        ProcessGroup group;
        try
        {
            group = ProcessGroup.Join(env.MasterAddr, port, secret, options.Group, env.Rank, env.WorldSize, options.ConnectTimeout, log, server);
        }
        catch
        {
            server?.Dispose();
            throw;
        }
        options = options with
        {
            AdvertiseAddress = options.AdvertiseAddress ?? AdvertiseAddress.Choose(group.Store.LocalAddress,
                multiNode: env.WorldSize > env.LocalWorldSize, Environment.GetEnvironmentVariable(AdvertiseAddress.InterfaceEnvVar)),
        };
        try
        {
            return backend == CollectiveBackend.Tcp
                ? TcpCollectives.Connect(group, options)
                : NcclCollectives.Connect(group, options, options.CudaDevice ?? (device?.index >= 0 ? device.index : env.LocalRank));
        }
        catch (Exception e)
        {
            group.PostAbort(new AbortNotice(env.Rank, $"rank {env.Rank} failed to connect the {backend} backend: {e.Message}"));
            group.Dispose();
            throw;
        }
    }
}
