namespace MeLlama.Distributed.Tests;

public class RendezvousTests
{
    static Dictionary<string, string> Vars(params (string Key, string Value)[] pairs) => pairs.ToDictionary(p => p.Key, p => p.Value);

    [Fact]
    public void NoVariablesMeansSingleProcess()
    {
        var env = Rendezvous.FromVariables(Vars(("HOME", "/root")));
        Assert.Equal(LaunchSource.Single, env.Source);
        Assert.False(env.IsDistributed);
        Assert.Equal((0, 1, 0, 1), (env.Rank, env.WorldSize, env.LocalRank, env.LocalWorldSize));
    }

    [Fact]
    public void ReadsTorchrunVariables()
    {
        var env = Rendezvous.FromVariables(Vars(("RANK", "5"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "4"),
            ("MASTER_ADDR", "node7"), ("MASTER_PORT", "29500"), ("GROUP_RANK", "1")));
        Assert.Equal(new DistributedEnvironment(5, 8, 1, 4, "node7", 29500, LaunchSource.Torchrun, 1), env with { Hosts = null });
    }

    [Fact]
    public void TorchrunWinsOverSlurmVariables()
    {
        var env = Rendezvous.FromVariables(Vars(("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1234"),
            ("SLURM_PROCID", "0"), ("SLURM_NTASKS", "4"), ("SLURM_STEP_ID", "0")));
        Assert.Equal(LaunchSource.Torchrun, env.Source);
        Assert.Equal(1, env.Rank);
    }

    [Fact]
    public void ReadsSlurmStepVariables()
    {
        var env = Rendezvous.FromVariables(Vars(
            ("SLURM_PROCID", "6"), ("SLURM_NTASKS", "10"), ("SLURM_STEP_NUM_TASKS", "10"), ("SLURM_LOCALID", "2"),
            ("SLURM_NODEID", "1"), ("SLURM_STEP_ID", "0"), ("SLURM_JOB_ID", "123456"),
            ("SLURM_JOB_NODELIST", "gpu[001-002,010]"), ("SLURM_TASKS_PER_NODE", "4(x2),2")));
        Assert.Equal(LaunchSource.Slurm, env.Source);
        Assert.Equal((6, 10, 2, 4, 1), (env.Rank, env.WorldSize, env.LocalRank, env.LocalWorldSize, env.NodeRank));
        Assert.Equal("gpu001", env.MasterAddr);
        Assert.Equal(Rendezvous.SlurmPortBase + 123456 % 10000, env.MasterPort);
        Assert.Equal(["gpu001", "gpu002", "gpu010"], env.Hosts!);
        Assert.Equal("123456", env.JobId);
    }

    [Fact]
    public void SlurmTasksPerNodeIsIndexedByNode()
    {
        var env = Rendezvous.FromVariables(Vars(("SLURM_PROCID", "8"), ("SLURM_NTASKS", "10"), ("SLURM_LOCALID", "0"), ("SLURM_NODEID", "2"),
            ("SLURM_STEP_ID", "0"), ("SLURM_JOB_ID", "7"), ("SLURM_JOB_NODELIST", "a,b,c"), ("SLURM_NTASKS_PER_NODE", "4(x2),2")));
        Assert.Equal(2, env.LocalWorldSize);
    }

    [Fact]
    public void ExplicitMasterVariablesOverrideSlurmDefaults()
    {
        var env = Rendezvous.FromVariables(Vars(("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2"), ("SLURM_STEP_ID", "3"), ("SLURM_JOB_ID", "99"),
            ("SLURM_JOB_NODELIST", "n[1-2]"), ("MASTER_ADDR", "10.0.0.1"), ("MASTER_PORT", "4000")));
        Assert.Equal(("10.0.0.1", 4000), (env.MasterAddr, env.MasterPort));
    }

    [Fact]
    public void SlurmBatchShellWithoutAStepStaysSingle()
    {
        // Inside an sbatch script (no srun), SLURM_PROCID=0 and SLURM_NTASKS=N are set too: waiting for N ranks would hang.
        var env = Rendezvous.FromVariables(Vars(("SLURM_PROCID", "0"), ("SLURM_NTASKS", "8"), ("SLURM_JOB_ID", "5"), ("SLURM_JOB_NODELIST", "n1")));
        Assert.Equal(LaunchSource.Single, env.Source);
    }

    [Theory]
    [InlineData("4294967294")] // the batch step
    [InlineData("4294967293")] // salloc's interactive step
    public void SlurmSpecialStepsStaySingle(string stepId)
    {
        var env = Rendezvous.FromVariables(Vars(("SLURM_PROCID", "0"), ("SLURM_NTASKS", "8"), ("SLURM_STEP_ID", stepId), ("SLURM_JOB_ID", "5"), ("SLURM_JOB_NODELIST", "n1")));
        Assert.Equal(LaunchSource.Single, env.Source);
    }

    [Fact]
    public void MellamaDistForcesAMode()
    {
        Assert.Equal(LaunchSource.Single, Rendezvous.FromVariables(Vars(("MELLAMA_DIST", "single"), ("RANK", "1"), ("WORLD_SIZE", "2"))).Source);
        Assert.Equal(LaunchSource.Slurm, Rendezvous.FromVariables(Vars(("MELLAMA_DIST", "slurm"), ("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1"))).Source);
    }

    [Theory]
    [InlineData("RANK=2 WORLD_SIZE=2 MASTER_ADDR=h MASTER_PORT=1", "RANK=2 must be below WORLD_SIZE=2")]
    [InlineData("RANK=0 WORLD_SIZE=2", "MASTER_ADDR and MASTER_PORT")]
    [InlineData("RANK=-1 WORLD_SIZE=2 MASTER_ADDR=h MASTER_PORT=1", "RANK='-1'")]
    [InlineData("RANK=0 WORLD_SIZE=x MASTER_ADDR=h MASTER_PORT=1", "WORLD_SIZE='x'")]
    [InlineData("RANK=0 WORLD_SIZE=2 MASTER_ADDR=h MASTER_PORT=70000", "MASTER_PORT=70000")]
    [InlineData("RANK=0 WORLD_SIZE=4 LOCAL_RANK=4 LOCAL_WORLD_SIZE=4 MASTER_ADDR=h MASTER_PORT=1", "LOCAL_RANK=4")]
    [InlineData("SLURM_PROCID=0 SLURM_NTASKS=2 SLURM_STEP_ID=0 SLURM_JOB_NODELIST=n[1-", "SLURM_JOB_NODELIST")]
    [InlineData("SLURM_PROCID=0 SLURM_NTASKS=2 SLURM_STEP_ID=0 SLURM_JOB_NODELIST=n1", "MASTER_PORT or SLURM_JOB_ID")]
    [InlineData("MELLAMA_DIST=mpi", "MELLAMA_DIST='mpi'")]
    public void BadVariablesAreNamed(string assignments, string expectedFragment)
    {
        var vars = assignments.Split(' ').Select(a => a.Split('=', 2)).ToDictionary(a => a[0], a => a[1]);
        var e = Assert.Throws<DistributedEnvironmentException>(() => Rendezvous.FromVariables(vars));
        Assert.Contains(expectedFragment, e.Message);
    }

    [Theory]
    [InlineData(8, 3, 3)]
    [InlineData(1, 3, 0)]
    public void CudaDeviceFollowsLocalRankUnlessOneGpuIsVisible(int visible, int localRank, int expected) =>
        Assert.Equal(expected, new DistributedEnvironment(localRank, 8, localRank, 8, "h", 1, LaunchSource.Slurm).CudaDeviceIndex(visible));
}
