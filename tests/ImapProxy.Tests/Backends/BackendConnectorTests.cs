using System.Net;
using System.Net.Sockets;
using System.Text;
using ImapProxy.Backends;
using ImapProxy.Configuration;
using ImapProxy.Connections.Transport;
using ImapProxy.Connections.Transport.Epoll;
using ImapProxy.Protocol.PreAuth;
using ImapProxy.Protocol.Sasl;
using ImapProxy.Testing.Sockets;
using ImapProxy.Tls;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Xunit;

namespace ImapProxy.Tests.Backends;

/// <summary>
/// The hand-over over real loopback sockets, on either socket engine: with the epoll engine a plaintext backend is
/// handed over by the client's engine thread (<see cref="EpollBackendLogin"/>), with .NET's sockets by the streams'
/// asynchronous path. The backend is a script on a raw socket (a fake: what it sends and when is the point), and both
/// paths must put the same bytes on the wire and give the same result.
/// </summary>
public sealed class BackendConnectorTests : IAsyncLifetime
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);

    private readonly EpollEngine _epoll = new(1, inlineContinuations: true, NullLogger.Instance);
    private readonly List<IDisposable> _owned = [];
    private Socket _listener = null!; // where the scripted backend (a fake) is accepted

    public Task InitializeAsync()
    {
        _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen();
        return Task.CompletedTask;
    }

    public Task DisposeAsync()
    {
        foreach (var owned in _owned)
        {
            owned.Dispose();
        }

        _listener.Dispose();
        _epoll.Dispose();
        return Task.CompletedTask;
    }

    [Theory]
    [InlineData(SocketEngineKind.Epoll)]
    [InlineData(SocketEngineKind.DotNet)]
    public async Task ABackendThatSpeaksAByteAtATime_IsLoggedInto_AfterTheProxyHeader_AndWhatFollowsItsOkIsKept(SocketEngineKind engine)
    {
        var (connector, endpoints) = await CreateAsync(engine);
        var backend = new BackendEndpoint("b1", "127.0.0.1", Port, 1, proxyProtocol: true);

        var login = Login(connector, backend, endpoints, CancellationToken.None);
        using var backendFake = await _listener.AcceptAsync().WaitAsync(s_limit);

        // The PROXY header comes first, before the backend has said anything.
        var header = ProxyProtocolHeader.CreateV2(endpoints.Client, endpoints.Local);
        Assert.Equal(header, await ReceiveExactlyAsync(backendFake, header.Length));

        foreach (var b in "* OK [CAPABILITY IMAP4rev1 ID SASL-IR AUTH=PLAIN] ready\r\n"u8.ToArray())
        {
            await backendFake.SendAsync(new[] { b });
        }

        var commands = await ReceiveLinesAsync(backendFake, 2);
        Assert.StartsWith("P1 ID (\"x-originating-ip\" \"192.0.2.7\" ", commands[0], StringComparison.Ordinal);
        Assert.Equal("P2 AUTHENTICATE PLAIN AGFsaWNlAHMzY3JldA==", commands[1]);

        // The answers and an unsolicited line behind them, in one segment.
        await backendFake.SendAsync("P1 OK ID completed\r\nP2 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n* 3 EXISTS\r\n"u8.ToArray());
        var result = await login.WaitAsync(s_limit);

        Assert.Equal(BackendLoginOutcome.Success, result.Outcome);
        Assert.Equal("IMAP4rev1 IDLE", Encoding.ASCII.GetString(result.Capabilities!));
        await using var connection = result.Connection!;
        Assert.Equal("* 3 EXISTS\r\n", Encoding.ASCII.GetString(connection.TakePending()));
        Assert.True(result.AuthDuration > TimeSpan.Zero);

        // The connection is the caller's now: it reads and writes through its stream.
        await connection.Stream.WriteAsync("a NOOP\r\n"u8.ToArray());
        Assert.Equal(["a NOOP"], await ReceiveLinesAsync(backendFake, 1));
        await backendFake.SendAsync("a OK NOOP\r\n"u8.ToArray());
        var answer = new byte[11];
        await connection.Stream.ReadExactlyAsync(answer).AsTask().WaitAsync(s_limit);
        Assert.Equal("a OK NOOP\r\n", Encoding.ASCII.GetString(answer));
    }

    [Theory]
    [InlineData(SocketEngineKind.Epoll)]
    [InlineData(SocketEngineKind.DotNet)]
    public async Task ABackendThatClosesMidLogin_IsUnavailable(SocketEngineKind engine)
    {
        var (connector, endpoints) = await CreateAsync(engine);
        var login = Login(connector, new BackendEndpoint("b1", "127.0.0.1", Port, 1), endpoints, CancellationToken.None);
        using (var backendFake = await _listener.AcceptAsync().WaitAsync(s_limit))
        {
            await backendFake.SendAsync("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n"u8.ToArray());
            await ReceiveLinesAsync(backendFake, 1);
        }

        var result = await login.WaitAsync(s_limit);
        Assert.Equal(BackendLoginOutcome.Unavailable, result.Outcome);
        Assert.Equal("backend closed the connection during login", result.Detail);
        Assert.Equal("protocol", result.ErrorType);
        Assert.Null(result.Connection);
    }

    [Theory]
    [InlineData(SocketEngineKind.Epoll)]
    [InlineData(SocketEngineKind.DotNet)]
    public async Task ARefusedConnect_IsAConnectFailure(SocketEngineKind engine)
    {
        var (connector, endpoints) = await CreateAsync(engine);
        int closed;
        using (var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            closed = ((IPEndPoint)socket.LocalEndPoint!).Port; // bound, never listening: connects are refused
            var result = await Login(connector, new BackendEndpoint("b1", "127.0.0.1", closed, 1), endpoints, CancellationToken.None).WaitAsync(s_limit);

            Assert.Equal(BackendLoginOutcome.ConnectFailed, result.Outcome);
            Assert.Equal("connect failed: ConnectionRefused", result.Detail);
            Assert.Equal("connect", result.ErrorType);
        }
    }

    [Theory]
    [InlineData(SocketEngineKind.Epoll)]
    [InlineData(SocketEngineKind.DotNet)]
    public async Task TheCallersCancellation_EndsAWaitingLogin_AsCancelled(SocketEngineKind engine)
    {
        var (connector, endpoints) = await CreateAsync(engine);
        using var cancel = new CancellationTokenSource();
        var login = Login(connector, new BackendEndpoint("b1", "127.0.0.1", Port, 1), endpoints, cancel.Token);
        using var backendFake = await _listener.AcceptAsync().WaitAsync(s_limit);

        cancel.Cancel();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => login.WaitAsync(s_limit));
        var buffer = new byte[1];
        Assert.Equal(0, await backendFake.ReceiveAsync(buffer).WaitAsync(s_limit)); // the proxy closed its socket
    }

    [Theory]
    [InlineData(SocketEngineKind.Epoll)]
    [InlineData(SocketEngineKind.DotNet)]
    public async Task ABackendGivenByName_IsReachedAtTheFirstAddressThatTakesAConnection_AndTheNameIsLookedUpOnce(SocketEngineKind engine)
    {
        // The resolver is a fake: the name's first address (127.0.0.2) refuses, the second is the scripted backend's.
        var lookUps = 0;
        var (connector, endpoints) = await CreateAsync(engine, (host, _) =>
        {
            Assert.Equal("imap-backend", host);
            Interlocked.Increment(ref lookUps);
            return Task.FromResult(new[] { IPAddress.Parse("127.0.0.2"), IPAddress.Loopback });
        });
        var backend = new BackendEndpoint("b1", "imap-backend", Port, 1);

        for (var i = 0; i < 2; i++)
        {
            var login = Login(connector, backend, endpoints, CancellationToken.None);
            using var backendFake = await _listener.AcceptAsync().WaitAsync(s_limit);
            await backendFake.SendAsync("* OK [CAPABILITY IMAP4rev1 ID SASL-IR AUTH=PLAIN] ready\r\n"u8.ToArray());
            Assert.Equal("P2 AUTHENTICATE PLAIN AGFsaWNlAHMzY3JldA==", (await ReceiveLinesAsync(backendFake, 2))[1]);
            await backendFake.SendAsync("P1 OK ID completed\r\nP2 OK [CAPABILITY IMAP4rev1] Logged in\r\n"u8.ToArray());

            var result = await login.WaitAsync(s_limit);
            Assert.Equal(BackendLoginOutcome.Success, result.Outcome);
            await result.Connection!.DisposeAsync();
        }

        Assert.Equal(1, lookUps);
    }

    [Theory]
    [InlineData(SocketEngineKind.Epoll)]
    [InlineData(SocketEngineKind.DotNet)]
    public async Task ABackendNameWhoseAddressesAllRefuse_IsAConnectFailure_AndIsLookedUpAgainAtTheNextLogin(SocketEngineKind engine)
    {
        var lookUps = 0;
        var (connector, endpoints) = await CreateAsync(engine, (_, _) =>
        {
            Interlocked.Increment(ref lookUps);
            return Task.FromResult(new[] { IPAddress.Parse("127.0.0.2"), IPAddress.Parse("127.0.0.3") });
        });
        var backend = new BackendEndpoint("b1", "imap-backend", Port, 1); // nothing listens on 127.0.0.2 or .3

        for (var i = 1; i <= 2; i++)
        {
            var result = await Login(connector, backend, endpoints, CancellationToken.None).WaitAsync(s_limit);
            Assert.Equal(BackendLoginOutcome.ConnectFailed, result.Outcome);
            Assert.Equal("connect failed: ConnectionRefused", result.Detail);
            Assert.Equal(i, lookUps);
        }
    }

    [Fact]
    public async Task ABackendNameThatDoesNotResolve_IsAConnectFailure()
    {
        var (connector, endpoints) = await CreateAsync(SocketEngineKind.Epoll, (_, _) => Task.FromException<IPAddress[]>(new SocketException((int)SocketError.HostNotFound)));

        var result = await Login(connector, new BackendEndpoint("b1", "imap-backend", Port, 1), endpoints, CancellationToken.None).WaitAsync(s_limit);

        Assert.Equal(BackendLoginOutcome.ConnectFailed, result.Outcome);
        Assert.Equal("name lookup failed: HostNotFound", result.Detail);
        Assert.Equal("dns", result.ErrorType);
    }

    private int Port => ((IPEndPoint)_listener.LocalEndPoint!).Port;

    private static Task<BackendLoginResult> Login(BackendConnector connector, BackendEndpoint backend, ClientEndpoints endpoints, CancellationToken cancellationToken)
    {
        var credentials = new ImapCredentials(LoginMechanism.LoginCommand, "alice"u8.ToArray(), "s3cret"u8.ToArray());
        return connector.LoginAsync(backend, credentials, ClientIdentity.Empty, endpoints, "0123456789abcdef0123456789abcdef", cancellationToken).AsTask();
    }

    /// <summary>A connector on <paramref name="kind"/>, and a client connection of that engine to hand over for.</summary>
    private async Task<(BackendConnector Connector, ClientEndpoints Endpoints)> CreateAsync(SocketEngineKind kind, Func<string, CancellationToken, Task<IPAddress[]>>? lookUpFake = null)
    {
        var options = Options.Create(new ImapProxyOptions());
        ISocketEngine engine = kind == SocketEngineKind.Epoll ? _epoll : DotNetSocketEngine.Instance;
        var trim = new AllocatorTrim(options, TimeProvider.System, NullLogger<AllocatorTrim>.Instance);
        _owned.Add(trim);
        var connector = new BackendConnector(options, TimeProvider.System, new TlsBufferPolicy(options, trim, NullLogger<TlsBufferPolicy>.Instance), engine, lookUpFake);

        var (client, proxySide) = await LoopbackSockets.ConnectPairAsync();
        _owned.Add(client);
        var stream = engine.Attach(proxySide);
        _owned.Add(stream);
        var endpoints = new ClientEndpoints(new IPEndPoint(IPAddress.Parse("192.0.2.7"), 50123), new IPEndPoint(IPAddress.Loopback, 143)) { ClientStream = stream };
        return (connector, endpoints);
    }

    private static async Task<byte[]> ReceiveExactlyAsync(Socket socket, int count)
    {
        var buffer = new byte[count];
        var received = 0;
        while (received < count)
        {
            var read = await socket.ReceiveAsync(buffer.AsMemory(received)).AsTask().WaitAsync(s_limit);
            Assert.NotEqual(0, read);
            received += read;
        }

        return buffer;
    }

    /// <summary>The next <paramref name="count"/> lines the proxy sends, read a byte at a time (nothing beyond them).</summary>
    private static async Task<List<string>> ReceiveLinesAsync(Socket socket, int count)
    {
        var lines = new List<string>();
        var line = new List<byte>();
        while (lines.Count < count)
        {
            var b = (await ReceiveExactlyAsync(socket, 1))[0];
            if (b == (byte)'\n')
            {
                lines.Add(Encoding.ASCII.GetString(line.ToArray()).TrimEnd('\r'));
                line.Clear();
            }
            else
            {
                line.Add(b);
            }
        }

        return lines;
    }
}
