namespace MeLlama.Distributed;

/// <summary>A peer failed the job-secret handshake, or this process failed it at a peer.</summary>
public sealed class PeerAuthenticationException(string message) : Exception(message);
