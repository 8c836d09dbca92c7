using System.Net;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Dovecot;
using ImapProxy.Testing.Proxy;
using ImapProxy.Testing.Raw;

namespace ImapProxy.FunctionalTests;

/// <summary>A listener behind a load balancer that speaks the PROXY protocol (DESIGN §2).</summary>
public sealed class ProxyProtocolListenerTests
{
    [Theory]
    [InlineData("v1")]
    [InlineData("v2")]
    public async Task HeaderFromTrustedBalancer_ItsClientAddressReachesTheBackend(string version)
    {
        var directory = System.IO.Directory.CreateTempSubdirectory("imapproxy-proxyproto-").FullName;
        try
        {
            var certificate = TestCertificates.CreateSelfSigned(directory);
            await using var backend = await DovecotInstance.StartAsync(new DovecotOptions { Users = [new DovecotUser("alice", "alice-pass")] });
            await using var proxy = await ProxyServer.StartAsync(
                [new ProxyBackend("b", backend.Address, backend.Port)],
                certificate.CertificatePath,
                certificate.KeyPath,
                new Dictionary<string, string?>
                {
                    ["ImapProxy:Listeners:1:ProxyProtocol"] = "true",
                    ["ImapProxy:Listeners:1:ProxyProtocolTrustedNetworks:0"] = "127.0.0.51/32",
                });

            byte[] header = version == "v1"
                ? "PROXY TCP4 198.51.100.7 192.0.2.1 40000 993\r\n"u8.ToArray()
                : [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C, 198, 51, 100, 7, 192, 0, 2, 1, 0x9C, 0x40, 0x03, 0xE1];
            await using (var client = await RawImapClient.ConnectAsync(proxy.Imaps, IPAddress.Parse("127.0.0.51"), serverCertificate: certificate.Certificate))
            {
                await client.SendAsync(header);
                await client.UpgradeToTlsAsync();
                Assert.StartsWith("* OK", await client.ReadLineAsync(), StringComparison.Ordinal);
                Assert.StartsWith("a OK", (await client.CommandAsync("a", "LOGIN alice alice-pass"))[^1], StringComparison.Ordinal);
                await client.CommandAsync("b", "LOGOUT");
            }

            // The backend logs the balancer's client, not the balancer; so does the proxy's summary.
            await backend.WaitForLogAsync(log => log.Contains("rip=198.51.100.7", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
            await proxy.Logs.WaitForAsync(l => l.Contains("Session ended: user=alice client=198.51.100.7:40000", StringComparison.Ordinal), TimeSpan.FromSeconds(30));

            // Anyone else is closed before a greeting; so is a trusted peer without a header.
            await using (var untrusted = await RawImapClient.ConnectAsync(proxy.Imaps, IPAddress.Parse("127.0.0.52")))
            {
                await untrusted.SendAsync(header);
                Assert.True(await untrusted.WaitForCloseAsync(TimeSpan.FromSeconds(30)));
            }

            await using (var noHeader = await RawImapClient.ConnectAsync(proxy.Imaps, IPAddress.Parse("127.0.0.51")))
            {
                await noHeader.SendAsync("a LOGIN alice alice-pass\r\n");
                Assert.True(await noHeader.WaitForCloseAsync(TimeSpan.FromSeconds(30)));
            }
        }
        finally
        {
            System.IO.Directory.Delete(directory, recursive: true);
        }
    }
}
