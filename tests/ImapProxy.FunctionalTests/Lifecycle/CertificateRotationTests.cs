using System.Security.Cryptography.X509Certificates;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Dovecot;
using ImapProxy.Testing.Proxy;
using ImapProxy.Testing.Raw;

namespace ImapProxy.FunctionalTests.Lifecycle;

/// <summary>Replacing the PEM files (a Kubernetes Secret update) changes the certificate without a restart.</summary>
public sealed class CertificateRotationTests
{
    [Fact]
    public async Task ReplacedPemFiles_NewConnectionsGetTheNewCertificate_LiveOnesContinue()
    {
        var directory = System.IO.Directory.CreateTempSubdirectory("imapproxy-rotation-").FullName;
        try
        {
            var live = Path.Combine(directory, "live");
            var first = TestCertificates.CreateSelfSigned(System.IO.Directory.CreateDirectory(live).FullName, "first.example");
            var second = TestCertificates.CreateSelfSigned(System.IO.Directory.CreateDirectory(Path.Combine(directory, "next")).FullName, "second.example");
            await using var backend = await DovecotInstance.StartAsync(new DovecotOptions { Users = [new DovecotUser("alice", "alice-pass")] });
            await using var proxy = await ProxyServer.StartAsync(
                [new ProxyBackend("b", backend.Address, backend.Port)],
                first.CertificatePath,
                first.KeyPath,
                new Dictionary<string, string?> { ["ImapProxy:Tls:ReloadCheckInterval"] = "00:00:00.100" });

            await using var before = await RawImapClient.ConnectAsync(proxy.Imaps, implicitTls: true, serverCertificate: first.Certificate);
            Assert.Equal(first.Certificate.Thumbprint, new X509Certificate2(before.RemoteCertificate!).Thumbprint);
            await before.ReadLineAsync();
            Assert.StartsWith("a OK", (await before.CommandAsync("a", "LOGIN alice alice-pass"))[^1], StringComparison.Ordinal);

            // Replace the files in place (key first: a mismatched pair is never loaded, the old one stays).
            File.Copy(second.KeyPath, first.KeyPath, overwrite: true);
            File.Copy(second.CertificatePath, first.CertificatePath, overwrite: true);

            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            string? seen = null;
            while (DateTime.UtcNow < deadline && seen != second.Certificate.Thumbprint)
            {
                await using var probe = await RawImapClient.ConnectAsync(proxy.Imaps, implicitTls: true, serverCertificate: null, acceptAnyCertificate: true);
                seen = new X509Certificate2(probe.RemoteCertificate!).Thumbprint;
                Assert.StartsWith("* OK", await probe.ReadLineAsync(), StringComparison.Ordinal);
            }

            Assert.Equal(second.Certificate.Thumbprint, seen);
            Assert.Contains(proxy.Logs.Lines, l => l.Contains("TLS certificate loaded: CN=second.example", StringComparison.Ordinal));

            // The session opened before the rotation goes on.
            Assert.StartsWith("b OK", (await before.CommandAsync("b", "NOOP"))[^1], StringComparison.Ordinal);
        }
        finally
        {
            System.IO.Directory.Delete(directory, recursive: true);
        }
    }
}
