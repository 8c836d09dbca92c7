using System.Net;
using ImapProxy.Connections;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Dovecot;
using ImapProxy.Testing.Proxy;
using ImapProxy.Testing.Raw;
using Microsoft.Extensions.DependencyInjection;

namespace ImapProxy.FunctionalTests.Lifecycle;

/// <summary>
/// The end of a spliced session. Nothing awaits a session once its splice has begun; the splice's end releases it
/// and gives the connection back to its listener, which closes it and stops counting it (a session the listener
/// still counted would hold up every shutdown until its time is up).
/// </summary>
public sealed class SessionEndTests : IAsyncLifetime
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);
    private string _directory = "";
    private TestCertificate _certificate = null!;
    private DovecotInstance _backend = null!;

    public async Task InitializeAsync()
    {
        _directory = System.IO.Directory.CreateTempSubdirectory("imapproxy-session-end-").FullName;
        _certificate = TestCertificates.CreateSelfSigned(_directory);
        _backend = await DovecotInstance.StartAsync(new DovecotOptions { Users = [new DovecotUser("alice", "alice-pass")] });
    }

    public async Task DisposeAsync()
    {
        await _backend.DisposeAsync();
        System.IO.Directory.Delete(_directory, recursive: true);
    }

    [Theory]
    [InlineData("plain")]
    [InlineData("implicit-tls")]
    [InlineData("proxy-header")]
    public async Task ASplicedSessionThatEnds_IsLoggedClosedAndNoLongerCounted(string kind)
    {
        await using var proxy = await ProxyServer.StartAsync(
            [new ProxyBackend("b", _backend.Address, _backend.Port)],
            _certificate.CertificatePath,
            _certificate.KeyPath,
            new Dictionary<string, string?>
            {
                ["ImapProxy:Listeners:1:ProxyProtocol"] = kind == "proxy-header" ? "true" : "false",
                ["ImapProxy:Listeners:1:ProxyProtocolTrustedNetworks:0"] = "127.0.0.71/32",
                ["ImapProxy:PreAuth:TrustedNetworks:0"] = "127.0.0.1/32", // LOGIN without TLS on the plain listener
            });
        var listeners = proxy.Services.GetRequiredService<ImapListeners>();

        await using (var client = await ConnectAsync(proxy, kind))
        {
            Assert.StartsWith("* OK", await client.ReadLineAsync(), StringComparison.Ordinal);
            Assert.StartsWith("a OK", (await client.CommandAsync("a", "LOGIN alice alice-pass"))[^1], StringComparison.Ordinal);
            Assert.StartsWith("b OK", (await client.CommandAsync("b", "SELECT INBOX"))[^1], StringComparison.Ordinal);
            Assert.Equal(1, listeners.OpenConnections);

            // The LOGOUT runs on the backend; its close ends the splice, and the session closes the client.
            Assert.StartsWith("c OK", (await client.CommandAsync("c", "LOGOUT"))[^1], StringComparison.Ordinal);
            Assert.True(await client.WaitForCloseAsync(s_limit), "the proxy did not close the client after the backend's close");
        }

        await proxy.Logs.WaitForAsync(l => l.Contains("Session ended: user=alice", StringComparison.Ordinal) && l.Contains("reason=backend closed", StringComparison.Ordinal), s_limit);

        // The listeners' stop waits until every connection they count has been given back (or aborts what is left
        // when the host's time is up): a session that never gave its connection back would still be counted here.
        await proxy.StopAsync().WaitAsync(s_limit);
        Assert.Equal(0, listeners.OpenConnections);
    }

    private async Task<RawImapClient> ConnectAsync(ProxyServer proxy, string kind)
    {
        switch (kind)
        {
            case "plain":
                return await RawImapClient.ConnectAsync(proxy.Imap);
            case "implicit-tls":
                return await RawImapClient.ConnectAsync(proxy.Imaps, implicitTls: true, serverCertificate: _certificate.Certificate);
            default:
                var client = await RawImapClient.ConnectAsync(proxy.Imaps, IPAddress.Parse("127.0.0.71"), serverCertificate: _certificate.Certificate);
                await client.SendAsync("PROXY TCP4 198.51.100.9 192.0.2.1 40000 993\r\n"u8.ToArray());
                await client.UpgradeToTlsAsync();
                return client;
        }
    }
}
