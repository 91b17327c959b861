namespace MeLlama.Distributed;

/// <summary>The launch environment (RANK, SLURM_*, MASTER_*, the job secret) is missing or inconsistent. Bad input: exit code 2.</summary>
public sealed class DistributedEnvironmentException(string message, Exception? inner = null) : Exception(message, inner);
