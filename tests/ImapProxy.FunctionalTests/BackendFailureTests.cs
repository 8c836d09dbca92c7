using System.Net;
using System.Net.Sockets;
using System.Text;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Dovecot;
using ImapProxy.Testing.Proxy;
using ImapProxy.Testing.Raw;

namespace ImapProxy.FunctionalTests;

/// <summary>Backends that die, refuse, stall or speak garbage: the client gets a clean answer or a clean close.</summary>
public sealed class BackendFailureTests : IAsyncLifetime
{
    private string _directory = "";
    private TestCertificate _certificate = null!;

    public Task InitializeAsync()
    {
        _directory = System.IO.Directory.CreateTempSubdirectory("imapproxy-failure-").FullName;
        _certificate = TestCertificates.CreateSelfSigned(_directory);
        return Task.CompletedTask;
    }

    public Task DisposeAsync()
    {
        System.IO.Directory.Delete(_directory, recursive: true);
        return Task.CompletedTask;
    }

    private Task<RawImapClient> ConnectAsync(ProxyServer proxy) =>
        RawImapClient.ConnectAsync(proxy.Imaps, implicitTls: true, serverCertificate: _certificate.Certificate);

    [Fact]
    public async Task BackendDyingMidSession_ClosesTheClientCleanly()
    {
        await using var backend = await DovecotInstance.StartAsync(new DovecotOptions { Users = [new DovecotUser("alice", "alice-pass")] });
        await using var proxy = await ProxyServer.StartAsync([new ProxyBackend("b", backend.Address, backend.Port)], _certificate.CertificatePath, _certificate.KeyPath);
        await using var client = await ConnectAsync(proxy);
        await client.ReadLineAsync();
        Assert.StartsWith("a OK", (await client.CommandAsync("a", "LOGIN alice alice-pass"))[^1], StringComparison.Ordinal);
        Assert.StartsWith("b OK", (await client.CommandAsync("b", "SELECT INBOX"))[^1], StringComparison.Ordinal);

        await backend.StopAsync();

        Assert.True(await client.WaitForCloseAsync(TimeSpan.FromSeconds(30)));
        var summary = await proxy.Logs.WaitForAsync(l => l.Contains("Session ended: user=alice", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
        Assert.Contains("reason=backend", summary, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BackendRefusingConnections_IsUnavailable_AndTheDialogueContinues()
    {
        var port = ClosedPort();
        await using var proxy = await ProxyServer.StartAsync([new ProxyBackend("b", "127.0.0.1", port)], _certificate.CertificatePath, _certificate.KeyPath);
        await using var client = await ConnectAsync(proxy);
        await client.ReadLineAsync();
        Assert.Equal(["a NO [UNAVAILABLE] Server unavailable, try again later."], await client.CommandAsync("a", "LOGIN alice alice-pass"));
        Assert.Equal(["b OK NOOP completed."], await client.CommandAsync("b", "NOOP"));
    }

    [Theory]
    [InlineData("HTTP/1.1 400 Bad Request\r\n\r\n")]
    [InlineData("* BYE Too busy\r\n")]
    [InlineData("* PREAUTH [CAPABILITY IMAP4rev1] Logged in as nobody\r\n")]
    [InlineData("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n")] // then closes during login
    public async Task BackendSpeakingGarbage_IsUnavailable(string script)
    {
        using var fake = new ScriptedBackendFake(Encoding.ASCII.GetBytes(script));
        await using var proxy = await ProxyServer.StartAsync([new ProxyBackend("b", "127.0.0.1", fake.Port)], _certificate.CertificatePath, _certificate.KeyPath);
        await using var client = await ConnectAsync(proxy);
        await client.ReadLineAsync();
        Assert.Equal(["a NO [UNAVAILABLE] Server unavailable, try again later."], await client.CommandAsync("a", "LOGIN alice alice-pass"));
        Assert.DoesNotContain("Bad Request", proxy.Logs.AllText, StringComparison.Ordinal);
    }

    [Fact]
    public async Task LiteralsInTheBackendsAnswers_AreReadPast_AndTheLoginGoesThrough()
    {
        // The whole conversation at once, so the hand-over finds several lines (and literals spanning CRLFs) in one
        // read: the ID answer carries two literals, the first with a line break inside it.
        using var fake = new ScriptedBackendFake(Encoding.ASCII.GetBytes(
            "* OK [CAPABILITY IMAP4rev1 ID AUTH=PLAIN SASL-IR LITERAL+] ready\r\n" +
            "* ID (\"name\" {7}\r\nDove\r\nt \"os\" {3}\r\nabc)\r\n" +
            "P1 OK ID completed\r\n" +
            "P2 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"));
        await using var proxy = await ProxyServer.StartAsync([new ProxyBackend("b", "127.0.0.1", fake.Port)], _certificate.CertificatePath, _certificate.KeyPath);
        await using var client = await ConnectAsync(proxy);
        await client.ReadLineAsync();

        Assert.Equal(["a OK [CAPABILITY IMAP4rev1 IDLE] Logged in"], await client.CommandAsync("a", "LOGIN alice alice-pass"));
    }

    [Fact]
    public async Task BackendThatNeverAnswers_TimesOut_AsUnavailable()
    {
        using var fake = new ScriptedBackendFake([], closeAfterScript: false);
        await using var proxy = await ProxyServer.StartAsync(
            [new ProxyBackend("b", "127.0.0.1", fake.Port)],
            _certificate.CertificatePath,
            _certificate.KeyPath,
            new Dictionary<string, string?> { ["ImapProxy:Backends:LoginTimeout"] = "00:00:01" });
        await using var client = await ConnectAsync(proxy);
        await client.ReadLineAsync();
        Assert.Equal(["a NO [UNAVAILABLE] Server unavailable, try again later."], await client.CommandAsync("a", "LOGIN alice alice-pass"));
        Assert.Contains(proxy.Logs.Lines, l => l.Contains("login timed out", StringComparison.Ordinal));
    }

    private static int ClosedPort()
    {
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    /// <summary>
    /// A fake backend (no real server misbehaves on demand): accepts connections, writes a fixed script, then
    /// closes or stays silent.
    /// </summary>
    private sealed class ScriptedBackendFake : IDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly CancellationTokenSource _stop = new();
        private readonly List<TcpClient> _clients = [];
        private readonly Task _loop;

        public ScriptedBackendFake(byte[] script, bool closeAfterScript = true)
        {
            _listener.Start();
            _loop = Task.Run(async () =>
            {
                while (!_stop.IsCancellationRequested)
                {
                    TcpClient client;
                    try
                    {
                        client = await _listener.AcceptTcpClientAsync(_stop.Token);
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }

                    var stream = client.GetStream();
                    await stream.WriteAsync(script);
                    if (closeAfterScript)
                    {
                        // Let the proxy send its commands, then hang up on it.
                        var buffer = new byte[4096];
                        _ = await stream.ReadAsync(buffer);
                        client.Dispose();
                    }
                    else
                    {
                        _clients.Add(client);
                    }
                }
            });
        }

        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

        public void Dispose()
        {
            _stop.Cancel();
            _listener.Stop();
            _loop.Wait(TimeSpan.FromSeconds(5));
            foreach (var client in _clients)
            {
                client.Dispose();
            }

            _stop.Dispose();
        }
    }
}
