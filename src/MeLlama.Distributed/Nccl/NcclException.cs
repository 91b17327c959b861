namespace MeLlama.Distributed.Nccl;

/// <summary>An NCCL call returned an error code.</summary>
public sealed class NcclException(string call, NcclResult result, string errorString, string? lastError)
    : Exception($"{call} failed: {Name(result)} ({errorString}){(string.IsNullOrWhiteSpace(lastError) ? "" : ": " + lastError)}")
{
    public string Call { get; } = call;
    public NcclResult Result { get; } = result;

    /// <summary>The nccl.h name of a result code, e.g. ncclRemoteError.</summary>
    public static string Name(NcclResult result) =>
        Enum.IsDefined(result) ? "nccl" + result : $"ncclResult {(int)result}";
}

/// <summary>libnccl could not be loaded or lacks a required function.</summary>
public sealed class NcclUnavailableException(string message, Exception? inner = null) : Exception(message, inner);
