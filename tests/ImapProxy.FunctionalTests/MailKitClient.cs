using System.Net;
using System.Security.Cryptography.X509Certificates;
using ImapProxy.Testing.Proxy;
using MailKit.Net.Imap;
using MailKit.Security;

namespace ImapProxy.FunctionalTests;

/// <summary>How a test reaches the proxy with MailKit: which listener, and from which loopback address.</summary>
public enum Listener
{
    StartTls,
    ImplicitTls,

    /// <summary>The plain listener (no TLS at all), from the trusted address: a plaintext session end to end.</summary>
    TrustedPlain,
}

internal static class MailKitClient
{
    /// <summary>A connected (not authenticated) MailKit client that pins the fixture's certificate.</summary>
    public static Task<ImapClient> ConnectAsync(ClusterFixture cluster, Listener listener, IPAddress? localAddress = null) =>
        ConnectAsync(cluster.Proxy, cluster.ServerCertificate, listener, localAddress);

    /// <summary>A connected (not authenticated) MailKit client to <paramref name="proxy"/>, pinning its certificate.</summary>
    public static async Task<ImapClient> ConnectAsync(ProxyServer proxy, X509Certificate2 serverCertificate, Listener listener, IPAddress? localAddress = null)
    {
        var client = new ImapClient
        {
            Timeout = 30_000,
            ServerCertificateValidationCallback = (_, certificate, _, _) =>
                certificate is not null && certificate.GetRawCertData().AsSpan().SequenceEqual(serverCertificate.RawData),
        };
        localAddress ??= listener == Listener.TrustedPlain ? ClusterFixture.TrustedClient : null;
        if (localAddress is not null)
        {
            client.LocalEndPoint = new IPEndPoint(localAddress, 0);
        }

        var (endPoint, security) = listener switch
        {
            Listener.StartTls => (proxy.Imap, SecureSocketOptions.StartTls),
            Listener.ImplicitTls => (proxy.Imaps, SecureSocketOptions.SslOnConnect),
            _ => (proxy.Plain, SecureSocketOptions.None),
        };
        await client.ConnectAsync(endPoint.Address.ToString(), endPoint.Port, security);
        return client;
    }
}
