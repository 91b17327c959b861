using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace MeLlama.Distributed.Net;

/// <summary>
/// Mutual challenge-response authentication with the job secret, run first on every connection (store
/// and ring). The acceptor sends a random nonce; the connector answers with its own nonce and
/// HMAC(key, "C"|purpose|nonces); the acceptor checks it in constant time and answers with
/// HMAC(key, "S"|purpose|nonces), so the connector also knows it reached a member of its own job.
/// The purpose string keeps a proof for one protocol from being replayed into another.
/// </summary>
static class Handshake
{
    static ReadOnlySpan<byte> Magic => "MLMA"u8;
    const byte Version = 1;
    const int NonceBytes = 32, MacBytes = 32;
    const byte Accepted = 1, Rejected = 0;

    public static async Task AcceptAsync(Socket socket, JobSecret secret, string purpose, CancellationToken ct)
    {
        var hello = new byte[Magic.Length + 1 + NonceBytes];
        Magic.CopyTo(hello);
        hello[Magic.Length] = Version;
        var serverNonce = RandomNumberGenerator.GetBytes(NonceBytes);
        serverNonce.CopyTo(hello, Magic.Length + 1);
        await SocketIO.WriteAllAsync(socket, hello, ct).ConfigureAwait(false);

        var answer = new byte[NonceBytes + MacBytes];
        await SocketIO.ReadExactlyAsync(socket, answer, ct).ConfigureAwait(false);
        var clientNonce = answer.AsSpan(0, NonceBytes).ToArray();
        var expected = Mac(secret, 'C', purpose, serverNonce, clientNonce);
        if (!CryptographicOperations.FixedTimeEquals(expected, answer.AsSpan(NonceBytes)))
        {
            try { await SocketIO.WriteAllAsync(socket, new[] { Rejected }, ct).ConfigureAwait(false); } catch (SocketException) { }
            throw new PeerAuthenticationException("a connecting process did not prove the job secret; connection refused");
        }
        var reply = new byte[1 + MacBytes];
        reply[0] = Accepted;
        Mac(secret, 'S', purpose, serverNonce, clientNonce).CopyTo(reply, 1);
        await SocketIO.WriteAllAsync(socket, reply, ct).ConfigureAwait(false);
    }

    public static async Task ConnectAsync(Socket socket, JobSecret secret, string purpose, string peerDescription, CancellationToken ct)
    {
        var hello = new byte[Magic.Length + 1 + NonceBytes];
        await SocketIO.ReadExactlyAsync(socket, hello, ct).ConfigureAwait(false);
        if (!hello.AsSpan(0, Magic.Length).SequenceEqual(Magic) || hello[Magic.Length] != Version)
            throw new PeerAuthenticationException($"{peerDescription} is not a MeLlama {purpose} endpoint of this version");
        var serverNonce = hello.AsSpan(Magic.Length + 1).ToArray();
        var clientNonce = RandomNumberGenerator.GetBytes(NonceBytes);
        var answer = new byte[NonceBytes + MacBytes];
        clientNonce.CopyTo(answer, 0);
        Mac(secret, 'C', purpose, serverNonce, clientNonce).CopyTo(answer, NonceBytes);
        await SocketIO.WriteAllAsync(socket, answer, ct).ConfigureAwait(false);

        var status = new byte[1];
        try { await SocketIO.ReadExactlyAsync(socket, status, ct).ConfigureAwait(false); }
        catch (Exception e) when (e is EndOfStreamException or SocketException) { status[0] = Rejected; }
        if (status[0] != Accepted)
            throw new PeerAuthenticationException($"{peerDescription} rejected this process's job secret ({JobSecret.EnvVar} differs from the other ranks')");
        var serverMac = new byte[MacBytes];
        await SocketIO.ReadExactlyAsync(socket, serverMac, ct).ConfigureAwait(false);
        if (!CryptographicOperations.FixedTimeEquals(serverMac, Mac(secret, 'S', purpose, serverNonce, clientNonce)))
            throw new PeerAuthenticationException($"{peerDescription} does not know this job's secret: it is not a member of this job");
    }

    static byte[] Mac(JobSecret secret, char role, string purpose, byte[] serverNonce, byte[] clientNonce)
    {
        var purposeBytes = Encoding.UTF8.GetBytes(purpose);
        var message = new byte[1 + purposeBytes.Length + 1 + serverNonce.Length + clientNonce.Length];
        message[0] = (byte)role;
        purposeBytes.CopyTo(message, 1);
        message[1 + purposeBytes.Length] = 0;
        serverNonce.CopyTo(message, 2 + purposeBytes.Length);
        clientNonce.CopyTo(message, 2 + purposeBytes.Length + serverNonce.Length);
        return HMACSHA256.HashData(secret.Key, message);
    }
}
