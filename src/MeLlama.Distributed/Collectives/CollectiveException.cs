namespace MeLlama.Distributed;

/// <summary>
/// A collective failed on this rank: a peer died or stopped answering, the ranks called different
/// operations, or the job was aborted. <see cref="FailedRank"/> is the rank believed at fault, when known.
/// </summary>
public class CollectiveException(string message, int? failedRank = null, bool isTimeout = false, Exception? inner = null)
    : Exception(message, inner)
{
    public int? FailedRank { get; } = failedRank;
    public bool IsTimeout { get; } = isTimeout;
}
