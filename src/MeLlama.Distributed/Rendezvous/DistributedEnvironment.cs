namespace MeLlama.Distributed;

/// <summary>Where the process's rank and world came from.</summary>
public enum LaunchSource
{
    /// <summary>Neither torchrun-style nor Slurm variables: one process, no communication.</summary>
    Single,
    /// <summary>RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT (set by <c>mellama launch</c>, torchrun or a custom launcher).</summary>
    Torchrun,
    /// <summary>One task per GPU started by <c>srun</c> (SLURM_PROCID, SLURM_NTASKS, ...).</summary>
    Slurm,
}

/// <summary>
/// This process's place in a distributed job: its global rank, the world size, its rank on the node
/// (which GPU it drives) and where rank 0's rendezvous store listens.
/// </summary>
/// <param name="NodeRank">Index of this process's node (SLURM_NODEID / GROUP_RANK; 0 when unknown).</param>
/// <param name="JobId">Scheduler job id when known (SLURM_JOB_ID); mixed into the job secret and the default port.</param>
/// <param name="Hosts">The job's expanded host list under Slurm; empty otherwise.</param>
public sealed record DistributedEnvironment(
    int Rank,
    int WorldSize,
    int LocalRank,
    int LocalWorldSize,
    string MasterAddr,
    int MasterPort,
    LaunchSource Source,
    int NodeRank = 0,
    string? JobId = null,
    IReadOnlyList<string>? Hosts = null)
{
    public static DistributedEnvironment Single { get; } = new(0, 1, 0, 1, "127.0.0.1", 0, LaunchSource.Single);

    public bool IsDistributed => WorldSize > 1;

    /// <summary>
    /// The CUDA device this rank should use: its local rank when it sees every GPU of the node, or device 0
    /// when the scheduler gave each task exactly one GPU (srun --gpus-per-task=1 sets CUDA_VISIBLE_DEVICES per task).
    /// </summary>
    public int CudaDeviceIndex(int visibleDeviceCount)
    {
        if (visibleDeviceCount < 1) throw new InvalidOperationException("no CUDA device is visible to this process");
        if (visibleDeviceCount == 1) return 0;
        if (LocalRank >= visibleDeviceCount)
            throw new InvalidOperationException($"local rank {LocalRank} has no GPU: only {visibleDeviceCount} are visible on this node (start one task per GPU)");
        return LocalRank;
    }

    public override string ToString() =>
        $"rank {Rank}/{WorldSize} (local {LocalRank}/{LocalWorldSize}, node {NodeRank}) via {Source}, store {MasterAddr}:{MasterPort}";
}
