using System.Globalization;
using MeLlama.Distributed.Slurm;

namespace MeLlama.Distributed;

/// <summary>
/// Reads a process's rank and world from its environment, like torchrun and Slurm set it.
/// Order: MELLAMA_DIST=single forces one process; torchrun-style RANK+WORLD_SIZE win over Slurm;
/// Slurm is used only inside a job step started by srun (a numbered SLURM_STEP_ID), so a plain command in
/// an sbatch script or an salloc shell stays single-process instead of waiting for ranks that never come.
/// </summary>
public static class Rendezvous
{
    /// <summary>Default store port under Slurm when MASTER_PORT is unset: 20000 + job id mod 10000, below Linux's ephemeral range, different for neighbouring jobs sharing a node.</summary>
    public const int SlurmPortBase = 20000;

    public static DistributedEnvironment FromEnvironment() => FromVariables(EnvironmentVariables.Snapshot());

    public static DistributedEnvironment FromVariables(IReadOnlyDictionary<string, string> vars)
    {
        ArgumentNullException.ThrowIfNull(vars);
        string? mode = Get(vars, "MELLAMA_DIST")?.ToLowerInvariant();
        switch (mode)
        {
            case null or "" or "auto": break;
            case "single" or "off": return DistributedEnvironment.Single;
            case "torchrun": return FromTorchrun(vars);
            case "slurm": return FromSlurm(vars);
            default: throw new DistributedEnvironmentException($"MELLAMA_DIST='{mode}' is not one of auto, single, torchrun, slurm");
        }
        if (Get(vars, "RANK") != null || Get(vars, "WORLD_SIZE") != null) return FromTorchrun(vars);
        if (Get(vars, "SLURM_PROCID") != null && IsTaskStep(Get(vars, "SLURM_STEP_ID") ?? Get(vars, "SLURM_STEPID")))
            return FromSlurm(vars);
        return DistributedEnvironment.Single;
    }

    static DistributedEnvironment FromTorchrun(IReadOnlyDictionary<string, string> vars)
    {
        int world = RequireInt(vars, "WORLD_SIZE", min: 1);
        int rank = RequireInt(vars, "RANK", min: 0);
        if (rank >= world) throw new DistributedEnvironmentException($"RANK={rank} must be below WORLD_SIZE={world}");
        int localWorld = OptionalInt(vars, "LOCAL_WORLD_SIZE", min: 1) ?? world;
        int localRank = OptionalInt(vars, "LOCAL_RANK", min: 0) ?? rank % localWorld;
        if (localRank >= localWorld) throw new DistributedEnvironmentException($"LOCAL_RANK={localRank} must be below LOCAL_WORLD_SIZE={localWorld}");
        int nodeRank = OptionalInt(vars, "GROUP_RANK", min: 0) ?? OptionalInt(vars, "NODE_RANK", min: 0) ?? 0;
        string? addr = Get(vars, "MASTER_ADDR");
        int? port = OptionalPort(vars);
        if (world > 1 && (addr == null || port == null))
            throw new DistributedEnvironmentException($"WORLD_SIZE={world} needs MASTER_ADDR and MASTER_PORT (the host and port of rank 0's rendezvous store)");
        return new DistributedEnvironment(rank, world, localRank, localWorld, addr ?? "127.0.0.1", port ?? 0, LaunchSource.Torchrun, nodeRank, Get(vars, "SLURM_JOB_ID"));
    }

    static DistributedEnvironment FromSlurm(IReadOnlyDictionary<string, string> vars)
    {
        int world = OptionalInt(vars, "SLURM_STEP_NUM_TASKS", min: 1) ?? RequireInt(vars, "SLURM_NTASKS", min: 1);
        int rank = RequireInt(vars, "SLURM_PROCID", min: 0);
        if (rank >= world) throw new DistributedEnvironmentException($"SLURM_PROCID={rank} must be below the task count {world}");
        int localRank = OptionalInt(vars, "SLURM_LOCALID", min: 0) ?? 0;
        int nodeRank = OptionalInt(vars, "SLURM_NODEID", min: 0) ?? 0;
        string? jobId = Get(vars, "SLURM_JOB_ID") ?? Get(vars, "SLURM_JOBID");

        int localWorld = 1;
        string? perNodeName = new[] { "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE" }.FirstOrDefault(n => Get(vars, n) != null);
        if (perNodeName != null)
        {
            IReadOnlyList<int> perNode;
            try { perNode = SlurmTasksPerNode.Expand(Get(vars, perNodeName)!); }
            catch (FormatException e) { throw new DistributedEnvironmentException($"{perNodeName}: {e.Message}", e); }
            // SLURM_NTASKS_PER_NODE is usually one number meaning "every node".
            localWorld = perNode.Count == 1 ? perNode[0] : nodeRank < perNode.Count ? perNode[nodeRank]
                : throw new DistributedEnvironmentException($"{perNodeName}='{Get(vars, perNodeName)}' lists {perNode.Count} nodes but SLURM_NODEID={nodeRank}");
        }
        if (localRank >= localWorld) localWorld = localRank + 1; // inconsistent counts: trust the task's own id

        string? nodeListName = new[] { "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST" }.FirstOrDefault(n => Get(vars, n) != null);
        IReadOnlyList<string> hosts = [];
        if (nodeListName != null)
        {
            try { hosts = SlurmHostList.Expand(Get(vars, nodeListName)!); }
            catch (FormatException e) { throw new DistributedEnvironmentException($"{nodeListName}: {e.Message}", e); }
        }
        string? addr = Get(vars, "MASTER_ADDR") ?? (hosts.Count > 0 ? hosts[0] : null);
        int? port = OptionalPort(vars);
        if (port == null && jobId != null && long.TryParse(jobId.Split('_')[0], NumberStyles.None, CultureInfo.InvariantCulture, out long id))
            port = SlurmPortBase + (int)(id % 10000);
        if (world > 1 && addr == null)
            throw new DistributedEnvironmentException("under Slurm with several tasks, MASTER_ADDR or SLURM_JOB_NODELIST must name rank 0's host");
        if (world > 1 && port == null)
            throw new DistributedEnvironmentException("under Slurm with several tasks, MASTER_PORT or SLURM_JOB_ID must be set (the store port is derived from the job id)");
        return new DistributedEnvironment(rank, world, localRank, localWorld, addr ?? "127.0.0.1", port ?? 0, LaunchSource.Slurm, nodeRank, jobId, hosts);
    }

    /// <summary>
    /// A numbered srun step. Slurm's special steps (batch 0xFFFFFFFE, extern 0xFFFFFFFF, interactive
    /// 0xFFFFFFFD, ...) run the job script or an salloc shell, not one task per rank.
    /// </summary>
    static bool IsTaskStep(string? stepId) =>
        stepId != null && (!uint.TryParse(stepId, NumberStyles.None, CultureInfo.InvariantCulture, out uint id) || id < 0xFFFFFFF0u);

    static string? Get(IReadOnlyDictionary<string, string> vars, string name) =>
        vars.TryGetValue(name, out var v) && !string.IsNullOrWhiteSpace(v) ? v.Trim() : null;

    static int RequireInt(IReadOnlyDictionary<string, string> vars, string name, int min) =>
        OptionalInt(vars, name, min) ?? throw new DistributedEnvironmentException($"{name} is not set");

    static int? OptionalInt(IReadOnlyDictionary<string, string> vars, string name, int min)
    {
        var s = Get(vars, name);
        if (s == null) return null;
        if (!int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int v) || v < min)
            throw new DistributedEnvironmentException($"{name}='{s}' is not an integer >= {min}");
        return v;
    }

    static int? OptionalPort(IReadOnlyDictionary<string, string> vars)
    {
        int? p = OptionalInt(vars, "MASTER_PORT", min: 1);
        if (p > 65535) throw new DistributedEnvironmentException($"MASTER_PORT={p} is not a TCP port (1-65535)");
        return p;
    }
}
