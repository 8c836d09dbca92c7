using System.Net;
using ImapProxy.Configuration;
using Microsoft.Extensions.Options;

namespace ImapProxy.Connections;

/// <summary>Networks whose clients may send plaintext credentials without TLS.</summary>
internal sealed class TrustedNetworks
{
    private readonly IPNetwork[] _networks;

    public TrustedNetworks(IOptions<ImapProxyOptions> options)
    {
        _networks = options.Value.PreAuth.TrustedNetworks.Select(n => IPNetwork.Parse(n)).ToArray();
    }

    public bool Contains(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        foreach (var network in _networks)
        {
            if (network.Contains(address))
            {
                return true;
            }
        }

        return false;
    }
}
