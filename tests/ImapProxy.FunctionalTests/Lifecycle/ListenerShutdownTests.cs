using System.Net;
using ImapProxy.Connections;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Proxy;
using ImapProxy.Testing.Raw;
using Microsoft.Extensions.DependencyInjection;

namespace ImapProxy.FunctionalTests.Lifecycle;

/// <summary>The IMAP listeners at shutdown (DESIGN §6): what outlives the host's shutdown time is aborted.</summary>
public sealed class ListenerShutdownTests
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task AConnectionOutlivingTheShutdownTime_IsAborted_AndTheHostStops()
    {
        // A trusted balancer's connection that never sends its PROXY header waits for its own deadline (set far
        // beyond the test), not for the shutdown: neither the pre-auth BYE nor the end of the grace reaches it. When
        // the host's time (grace + 5 s) is up, the listeners abort it.
        var directory = System.IO.Directory.CreateTempSubdirectory("imapproxy-listener-stop-").FullName;
        try
        {
            var certificate = TestCertificates.CreateSelfSigned(directory);
            await using var proxy = await ProxyServer.StartAsync(
                [new ProxyBackend("b", "127.0.0.1", 9)], // never asked: nobody logs in
                certificate.CertificatePath,
                certificate.KeyPath,
                new Dictionary<string, string?>
                {
                    ["ImapProxy:Listeners:1:ProxyProtocol"] = "true",
                    ["ImapProxy:Listeners:1:ProxyProtocolTrustedNetworks:0"] = "127.0.0.61/32",
                    ["ImapProxy:Tls:HandshakeTimeout"] = "00:10:00",
                    ["ImapProxy:Session:ShutdownGrace"] = "00:00:00.2",
                });
            var listeners = proxy.Services.GetRequiredService<ImapListeners>();
            await using var balancer = await RawImapClient.ConnectAsync(proxy.Imaps, IPAddress.Parse("127.0.0.61"));
            await WaitForOpenConnectionsAsync(listeners, 1);

            var stopping = proxy.StopAsync();

            Assert.True(await balancer.WaitForCloseAsync(s_limit), "the connection was not closed at shutdown");
            await stopping.WaitAsync(s_limit);
            Assert.Equal(0, listeners.OpenConnections);
        }
        finally
        {
            System.IO.Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>Until the proxy has accepted the connections (a connect completes once the kernel has queued it).</summary>
    private static async Task WaitForOpenConnectionsAsync(ImapListeners listeners, int count)
    {
        using var deadline = new CancellationTokenSource(s_limit);
        while (listeners.OpenConnections < count)
        {
            await Task.Delay(10, deadline.Token); // no event tells of an accept; bounded by the deadline
        }
    }
}
