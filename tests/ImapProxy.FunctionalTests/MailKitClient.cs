using System.Net;
using MailKit.Net.Imap;
using MailKit.Security;

namespace ImapProxy.FunctionalTests;

/// <summary>How a test reaches the proxy with MailKit: which listener, and from which loopback address.</summary>
public enum Listener
{
    StartTls,
    ImplicitTls,
}

internal static class MailKitClient
{
    /// <summary>A connected (not authenticated) MailKit client that pins the fixture's certificate.</summary>
    public static async Task<ImapClient> ConnectAsync(ClusterFixture cluster, Listener listener, IPAddress? localAddress = null)
    {
        var client = new ImapClient
        {
            Timeout = 30_000,
            ServerCertificateValidationCallback = (_, certificate, _, _) =>
                certificate is not null && certificate.GetRawCertData().AsSpan().SequenceEqual(cluster.ServerCertificate.RawData),
        };
        if (localAddress is not null)
        {
            client.LocalEndPoint = new IPEndPoint(localAddress, 0);
        }

        var endPoint = listener == Listener.StartTls ? cluster.Proxy.Imap : cluster.Proxy.Imaps;
        await client.ConnectAsync(endPoint.Address.ToString(), endPoint.Port, listener == Listener.StartTls ? SecureSocketOptions.StartTls : SecureSocketOptions.SslOnConnect);
        return client;
    }
}
