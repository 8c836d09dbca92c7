using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using ImapProxy.Telemetry;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Dovecot;
using ImapProxy.Testing.Proxy;
using Microsoft.Extensions.DependencyInjection;

namespace ImapProxy.FunctionalTests;

/// <summary>
/// Replicas of the proxy behind one Service, and a client that comes back through another one: with one session
/// ticket key file, the client resumes its TLS session there and logs in to a real Dovecot; a replica with keys of
/// its own makes it do a full handshake. Counted by <c>imapproxy.tls.handshakes</c>.
/// </summary>
public sealed class TlsResumptionTests
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task ReplicasReadingOneTicketKeyFile_ResumeEachOthersClients()
    {
        var directory = System.IO.Directory.CreateTempSubdirectory("imapproxy-tls-resumption-").FullName;
        try
        {
            var certificate = TestCertificates.CreateSelfSigned(directory);
            var keyFile = Path.Combine(directory, "session-ticket-keys");
            await File.WriteAllTextAsync(keyFile, Convert.ToBase64String(RandomNumberGenerator.GetBytes(80)) + "\n");
            await using var backend = await DovecotInstance.StartAsync(new DovecotOptions { Users = [new DovecotUser("alice", "alice-pass")] });
            ProxyBackend[] backends = [new ProxyBackend("b", backend.Address, backend.Port)];
            var shared = new Dictionary<string, string?> { ["ImapProxy:Tls:SessionTicketKeyFile"] = keyFile };
            await using var first = await ProxyServer.StartAsync(backends, certificate.CertificatePath, certificate.KeyPath, shared);
            await using var second = await ProxyServer.StartAsync(backends, certificate.CertificatePath, certificate.KeyPath, shared);
            await using var alone = await ProxyServer.StartAsync(backends, certificate.CertificatePath, certificate.KeyPath);

            // The runtime's client offers the ticket it kept for the target host to whichever server it connects to
            // next. It keeps one after a full handshake whose greeting it read (and drops it at times after a longer
            // session, which is its own matter: every session that should resume here starts right after a full one).
            var client = ClientOptions(certificate);
            Assert.Equal("* OK", await ConnectAsync(first.Imaps, client, login: false));
            Assert.Equal("a OK", await ConnectAsync(second.Imaps, client, login: true));

            var another = ClientOptions(certificate);
            Assert.Equal("* OK", await ConnectAsync(first.Imaps, another, login: false));
            Assert.Equal("* OK", await ConnectAsync(alone.Imaps, another, login: false));

            Assert.Equal((0, 2), Handshakes(first));
            Assert.Equal((1, 0), Handshakes(second));
            Assert.Equal((0, 1), Handshakes(alone));
            Assert.Contains(second.Logs.Lines, line => line.Contains($"session tickets are sealed with keys from {keyFile}, 1 of them", StringComparison.Ordinal));
        }
        finally
        {
            System.IO.Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>
    /// Implicit TLS and the greeting (TLS 1.3's tickets come with it): its status; then, with <paramref name="login"/>,
    /// LOGIN and LOGOUT: the login's status.
    /// </summary>
    private static async Task<string> ConnectAsync(IPEndPoint endPoint, SslClientAuthenticationOptions options, bool login)
    {
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(endPoint).WaitAsync(s_limit);
        await using var tls = new SslStream(new NetworkStream(socket, ownsSocket: false));
        await tls.AuthenticateAsClientAsync(options).WaitAsync(s_limit);
        using var reader = new StreamReader(tls, Encoding.ASCII, detectEncodingFromByteOrderMarks: false, leaveOpen: true);
        var greeting = await reader.ReadLineAsync().WaitAsync(s_limit);
        if (!login || greeting?.StartsWith("* OK", StringComparison.Ordinal) != true)
        {
            return greeting?[..Math.Min(4, greeting.Length)] ?? "(closed)";
        }

        await tls.WriteAsync("a LOGIN alice alice-pass\r\nb LOGOUT\r\n"u8.ToArray());
        string? line;
        while ((line = await reader.ReadLineAsync().WaitAsync(s_limit)) is not null && !line.StartsWith("a ", StringComparison.Ordinal))
        {
        }

        return line is null ? "(closed)" : line[..4];
    }

    /// <summary>
    /// A client of its own: the runtime keeps its clients' sessions per target host (and protocols), so each gets a
    /// name no other test uses.
    /// </summary>
    private static SslClientAuthenticationOptions ClientOptions(TestCertificate certificate) => new()
    {
        TargetHost = $"client-{Guid.NewGuid():N}.test",
        RemoteCertificateValidationCallback = (_, presented, _, _) => presented?.GetRawCertData().AsSpan().SequenceEqual(certificate.Certificate.RawData) == true,
    };

    /// <summary>The proxy's TLS handshakes on its implicit-TLS listener: (resumed, full).</summary>
    private static (long Resumed, long Full) Handshakes(ProxyServer proxy)
    {
        long resumed = 0, full = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter == proxy.Services.GetRequiredService<ImapProxyMetrics>().Meter && instrument.Name == "imapproxy.tls.handshakes")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            string? listenerName = null, wasResumed = null;
            foreach (var tag in tags)
            {
                listenerName = tag.Key == ImapProxyMetrics.ListenerTag ? tag.Value as string : listenerName;
                wasResumed = tag.Key == ImapProxyMetrics.TlsResumedTag ? tag.Value as string : wasResumed;
            }

            if (listenerName == "imaps")
            {
                resumed += wasResumed == "true" ? value : 0;
                full += wasResumed == "false" ? value : 0;
            }
        });
        listener.Start();
        listener.RecordObservableInstruments();
        return (resumed, full);
    }
}
