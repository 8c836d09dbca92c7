using System.Net;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Dovecot;
using ImapProxy.Testing.Proxy;
using ImapProxy.Testing.Raw;

namespace ImapProxy.FunctionalTests;

/// <summary>
/// The delay before a failed login's answer holds the session, but not for a client that has hung up: a password
/// spray must not keep a session (and its socket) per attempt for the whole delay.
/// </summary>
public sealed class AuthFailureDelayTests : IAsyncLifetime
{
    private string _directory = "";
    private TestCertificate _certificate = null!;
    private DovecotInstance _backend = null!;
    private ProxyServer _proxy = null!;

    public async Task InitializeAsync()
    {
        _directory = System.IO.Directory.CreateTempSubdirectory("imapproxy-delay-").FullName;
        _certificate = TestCertificates.CreateSelfSigned(_directory);
        _backend = await DovecotInstance.StartAsync(new DovecotOptions { Users = [new DovecotUser("alice", "alice-pass")] });
        _proxy = await ProxyServer.StartAsync(
            [new ProxyBackend("b", _backend.Address, _backend.Port)],
            _certificate.CertificatePath,
            _certificate.KeyPath,
            new Dictionary<string, string?>
            {
                // Far longer than any wait below: the session may only end early because the client left.
                ["ImapProxy:PreAuth:AuthFailureDelay"] = "00:10:00",
                ["ImapProxy:PreAuth:AuthFailureMaxDelay"] = "00:10:00",
                ["ImapProxy:PreAuth:TrustedNetworks:0"] = "127.0.0.0/8",
            });
    }

    public async Task DisposeAsync()
    {
        await _proxy.DisposeAsync();
        await _backend.DisposeAsync();
        System.IO.Directory.Delete(_directory, recursive: true);
    }

    [Theory]
    [InlineData("plain", "127.0.0.41")]
    [InlineData("imaps", "127.0.0.42")]
    public async Task AClientHangingUpDuringTheDelay_EndsItsSessionAtOnce(string listener, string clientAddress)
    {
        var endPoint = listener == "plain" ? _proxy.Plain : _proxy.Imaps;
        var client = await RawImapClient.ConnectAsync(endPoint, IPAddress.Parse(clientAddress), implicitTls: listener == "imaps", serverCertificate: _certificate.Certificate);
        await client.ReadLineAsync();
        await client.SendAsync("a LOGIN alice wrong-password\r\n");
        await _proxy.Logs.WaitForAsync(l => l.Contains("Login failed for alice", StringComparison.Ordinal), TimeSpan.FromSeconds(60));

        await client.DisposeAsync();

        var summary = await _proxy.Logs.WaitForAsync(l => l.Contains("Session ended: user=alice", StringComparison.Ordinal) && l.Contains(clientAddress, StringComparison.Ordinal), TimeSpan.FromSeconds(60));
        Assert.Contains("reason=client closed", summary, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AClientSendingMoreDuringTheDelay_StillWaitsItOut()
    {
        await using var client = await RawImapClient.ConnectAsync(_proxy.Plain, IPAddress.Parse("127.0.0.43"));
        await client.ReadLineAsync();
        await client.SendAsync("a LOGIN alice wrong-password\r\nb NOOP\r\n");
        await _proxy.Logs.WaitForAsync(l => l.Contains("Login failed for alice", StringComparison.Ordinal), TimeSpan.FromSeconds(60));

        // Pipelined bytes are not a hang-up: no answer comes before the delay is over.
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.ReadLineAsync(TimeSpan.FromSeconds(2)));
        Assert.DoesNotContain("Session ended: user=alice", _proxy.Logs.AllText, StringComparison.Ordinal);
    }
}
