using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;

namespace MeLlama.Distributed.Net;

/// <summary>
/// Which address a rank tells the others to reach its ring listener at. Normally the local end of its
/// connection to rank 0 (the interface that routes to the other nodes). MELLAMA_SOCKET_IFNAME (like
/// GLOO_SOCKET_IFNAME) names an interface instead. A loopback address is useless across nodes, which
/// happens when a host name maps to 127.0.1.1 in /etc/hosts: then the first non-loopback interface is used.
/// </summary>
static class AdvertiseAddress
{
    public const string InterfaceEnvVar = "MELLAMA_SOCKET_IFNAME";

    public static IPAddress Choose(IPAddress towardsStore, bool multiNode, string? interfaceName)
    {
        if (!string.IsNullOrWhiteSpace(interfaceName))
            return InterfaceAddress(interfaceName) ?? throw new DistributedEnvironmentException($"{InterfaceEnvVar}={interfaceName}: no such interface with an IPv4/IPv6 address");
        if (!multiNode || !IPAddress.IsLoopback(towardsStore)) return towardsStore;
        return NetworkInterface.GetAllNetworkInterfaces()
            .Where(i => i.OperationalStatus == OperationalStatus.Up && i.NetworkInterfaceType != NetworkInterfaceType.Loopback)
            .SelectMany(i => i.GetIPProperties().UnicastAddresses.Select(a => a.Address))
            .FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(a))
            ?? towardsStore;
    }

    static IPAddress? InterfaceAddress(string name) =>
        NetworkInterface.GetAllNetworkInterfaces().FirstOrDefault(i => i.Name == name)?.GetIPProperties().UnicastAddresses
            .Select(a => a.Address).OrderBy(a => a.AddressFamily == AddressFamily.InterNetwork ? 0 : 1).FirstOrDefault();
}
