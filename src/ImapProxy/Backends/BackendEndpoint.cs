using System.IO.Hashing;
using System.Text;
using ImapProxy.Configuration;

namespace ImapProxy.Backends;

/// <summary>One IMAP backend as the directory sees it. Immutable; part of a directory snapshot.</summary>
public sealed class BackendEndpoint
{
    public BackendEndpoint(string id, string host, int port, double weight, BackendTls tls = BackendTls.None, string? tlsServerName = null, bool proxyProtocol = false, BackendAuthentication authentication = BackendAuthentication.Auto)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(id);
        ArgumentException.ThrowIfNullOrWhiteSpace(host);
        Id = id;
        Host = host;
        Port = port;
        Weight = weight;
        Tls = tls;
        TlsServerName = tlsServerName;
        ProxyProtocol = proxyProtocol;
        Authentication = authentication;
        HashSeed = unchecked((long)XxHash3.HashToUInt64(Encoding.UTF8.GetBytes(id)));
        Address = System.Net.IPAddress.TryParse(host, out var address) ? new System.Net.IPEndPoint(address, port) : null;
    }

    public string Id { get; }

    public string Host { get; }

    public int Port { get; }

    public double Weight { get; }

    public BackendTls Tls { get; }

    public string? TlsServerName { get; }

    public bool ProxyProtocol { get; }

    public BackendAuthentication Authentication { get; }

    /// <summary>The host and port as an address when the host is one (parsed once, not per login); null for a name.</summary>
    internal System.Net.IPEndPoint? Address { get; }

    /// <summary>Derived from the id only, so every replica scores users the same way for this backend.</summary>
    internal long HashSeed { get; }

    public static BackendEndpoint FromOptions(StaticBackendOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new BackendEndpoint(options.Id, options.Host, options.Port, options.Weight, options.Tls, options.TlsServerName, options.ProxyProtocol, options.Authentication);
    }

    public override string ToString() => $"{Id} ({Host}:{Port})";
}
