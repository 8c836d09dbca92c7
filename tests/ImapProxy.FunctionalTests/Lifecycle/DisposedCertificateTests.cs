using System.Net.Security;
using System.Net.Sockets;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Proxy;
using ImapProxy.Tls;
using Microsoft.Extensions.DependencyInjection;

namespace ImapProxy.FunctionalTests.Lifecycle;

/// <summary>
/// The last moments of a shutdown: the host disposes its services, the certificate provider among them, while a
/// connection accepted just before is about to start its TLS handshake. That session ends as shut down, quietly.
/// </summary>
public sealed class DisposedCertificateTests
{
    [Fact]
    public async Task AHandshakeAfterTheCertificateProviderWasDisposed_EndsTheSessionAsShutDown_WithoutAnError()
    {
        var directory = System.IO.Directory.CreateTempSubdirectory("imapproxy-disposed-certificate-").FullName;
        try
        {
            var certificate = TestCertificates.CreateSelfSigned(directory);
            await using var proxy = await ProxyServer.StartAsync(
                [new ProxyBackend("b", "127.0.0.1", 1)],
                certificate.CertificatePath,
                certificate.KeyPath,
                new Dictionary<string, string?> { ["ImapProxy:Tls:ReloadCheckInterval"] = "01:00:00" }); // no reload
            var provider = proxy.Services.GetRequiredService<ServerCertificateProvider>();
            Assert.NotNull(provider.GetServer().Context);
            provider.Dispose();

            using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(proxy.Imaps);
            await using var tls = new SslStream(new NetworkStream(socket, ownsSocket: false));
            await Assert.ThrowsAnyAsync<Exception>(() => tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = "localhost",
                RemoteCertificateValidationCallback = (_, presented, _, _) => presented?.GetRawCertData().AsSpan().SequenceEqual(certificate.Certificate.RawData) == true,
            }).WaitAsync(TimeSpan.FromSeconds(30)));

            await proxy.Logs.WaitForAsync(line => line.Contains("reason=shutdown", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
            Assert.DoesNotContain(proxy.Logs.Lines, line => line.StartsWith("Error", StringComparison.Ordinal));
        }
        finally
        {
            System.IO.Directory.Delete(directory, recursive: true);
        }
    }
}
