using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Dovecot;
using ImapProxy.Testing.Proxy;
using ImapProxy.Testing.Raw;

namespace ImapProxy.FunctionalTests;

/// <summary>TLS between the proxy and a real Dovecot: implicit TLS and STARTTLS, validated against a CA file.</summary>
public sealed class BackendTlsTests : IAsyncLifetime
{
    private string _directory = "";
    private TestCertificate _certificate = null!;
    private DovecotInstance _backend = null!;

    public async Task InitializeAsync()
    {
        _directory = System.IO.Directory.CreateTempSubdirectory("imapproxy-backend-tls-").FullName;
        _certificate = TestCertificates.CreateSelfSigned(_directory);
        _backend = await DovecotInstance.StartAsync(new DovecotOptions
        {
            Users = [new DovecotUser("alice", "alice-pass")],
            CertificatePemPath = _certificate.CertificatePath,
            KeyPemPath = _certificate.KeyPath,
        });
    }

    public async Task DisposeAsync()
    {
        await _backend.DisposeAsync();
        System.IO.Directory.Delete(_directory, recursive: true);
    }

    [Theory]
    [InlineData("Implicit")]
    [InlineData("StartTls")]
    public async Task Login_OverTlsToTheBackend_Works(string tls)
    {
        var port = tls == "Implicit" ? _backend.ImapsPort!.Value : _backend.Port;
        await using var proxy = await ProxyServer.StartAsync(
            [new ProxyBackend("b", _backend.Address, port, Tls: tls)],
            _certificate.CertificatePath,
            _certificate.KeyPath,
            new Dictionary<string, string?> { ["ImapProxy:Backends:CaFile"] = _certificate.CertificatePath });
        await using var client = await RawImapClient.ConnectAsync(proxy.Imaps, implicitTls: true, serverCertificate: _certificate.Certificate);
        await client.ReadLineAsync();
        Assert.StartsWith("a OK [CAPABILITY ", (await client.CommandAsync("a", "LOGIN alice alice-pass"))[^1], StringComparison.Ordinal);
        Assert.StartsWith("b OK", (await client.CommandAsync("b", "SELECT INBOX"))[^1], StringComparison.Ordinal);
        // Dovecot saw a TLS connection (its login line says so).
        await _backend.WaitForLogAsync(log => log.Contains("Login: user=<alice>", StringComparison.Ordinal) && log.Contains("TLS", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task Login_ToABackendWhoseCertificateIsNotTrusted_IsUnavailable()
    {
        var other = TestCertificates.CreateSelfSigned(System.IO.Directory.CreateDirectory(Path.Combine(_directory, "other")).FullName);
        await using var proxy = await ProxyServer.StartAsync(
            [new ProxyBackend("b", _backend.Address, _backend.ImapsPort!.Value, Tls: "Implicit")],
            _certificate.CertificatePath,
            _certificate.KeyPath,
            new Dictionary<string, string?> { ["ImapProxy:Backends:CaFile"] = other.CertificatePath });
        await using var client = await RawImapClient.ConnectAsync(proxy.Imaps, implicitTls: true, serverCertificate: _certificate.Certificate);
        await client.ReadLineAsync();
        Assert.Equal(["a NO [UNAVAILABLE] Server unavailable, try again later."], await client.CommandAsync("a", "LOGIN alice alice-pass"));
        Assert.Contains(proxy.Logs.Lines, l => l.Contains("TLS handshake with backend failed", StringComparison.Ordinal));
    }
}
