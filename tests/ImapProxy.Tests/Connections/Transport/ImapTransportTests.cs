using System.Buffers;
using System.Net;
using System.Net.Sockets;
using ImapProxy.Connections.Transport;
using ImapProxy.Connections.Transport.Epoll;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace ImapProxy.Tests.Connections.Transport;

/// <summary>The IMAP transport with the proxy's own epoll engine (the default on Linux).</summary>
public sealed class EpollTransportTests() : ImapTransportTests(new EpollEngine(1, inlineContinuations: true, NullLogger.Instance));

/// <summary>The IMAP transport with .NET's sockets (other systems, or Performance:SocketEngine=DotNet).</summary>
public sealed class DotNetTransportTests() : ImapTransportTests(DotNetSocketEngine.Instance);

/// <summary>
/// The IMAP listeners' sockets and connections on real loopback sockets: binding, accepting, the connection's pipes
/// and ends; the same for either socket engine.
/// </summary>
public abstract class ImapTransportTests : IAsyncLifetime
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);

    private readonly ISocketEngine _engine;
    private ImapListenSocket? _listener;
    private Socket? _client;
    private ImapSocketConnection? _connection;

    private protected ImapTransportTests(ISocketEngine engine)
    {
        _engine = engine;
    }

    public Task InitializeAsync() => Task.CompletedTask;

    // xunit 2 disposes a test class through IDisposable or IAsyncLifetime only, never IAsyncDisposable.
    public async Task DisposeAsync()
    {
        if (_connection is not null)
        {
            await _connection.DisposeAsync();
        }

        _client?.Dispose();
        _listener?.Dispose();

        (_engine as IDisposable)?.Dispose();
    }

    [Fact]
    public async Task AcceptedConnection_CarriesBothEndpoints_AndItsPipesReadAndWriteTheSocket()
    {
        await AcceptAsync();

        Assert.Equal(_client!.LocalEndPoint, _connection!.RemoteEndPoint);
        Assert.Equal(_client.RemoteEndPoint, _connection.LocalEndPoint);
        Assert.True(NoDelay(_connection));
        Assert.StartsWith("imap-", _connection.ConnectionId, StringComparison.Ordinal);

        await _client.SendAsync("a1 NOOP\r\n"u8.ToArray());
        var read = await _connection.Transport.Input.ReadAtLeastAsync(9).AsTask().WaitAsync(s_limit);
        Assert.Equal("a1 NOOP\r\n"u8.ToArray(), read.Buffer.ToArray());
        _connection.Transport.Input.AdvanceTo(read.Buffer.End);

        await _connection.Transport.Output.WriteAsync("a1 OK\r\n"u8.ToArray());
        var reply = new byte[7];
        Assert.Equal(7, await _client.ReceiveAsync(reply).WaitAsync(s_limit));
    }

    [Fact]
    public async Task ReleaseTransport_ReturnsWhatTheReaderHeld_AndTheSocketReadsOnDirectly()
    {
        await AcceptAsync();
        Assert.Empty(_connection!.ReleaseTransport()); // never created: nothing to give back

        await _client!.SendAsync("a LOGIN u p\r\nb SELECT INBOX\r\n"u8.ToArray());
        var input = _connection.Transport.Input;
        var read = await input.ReadAtLeastAsync(29).AsTask().WaitAsync(s_limit);
        input.AdvanceTo(read.Buffer.GetPosition(13)); // the dialogue consumed the LOGIN line only

        Assert.Equal("b SELECT INBOX\r\n"u8.ToArray(), _connection.ReleaseTransport());

        await _client.SendAsync("c NOOP\r\n"u8.ToArray());
        var next = new byte[8];
        await _connection.Stream.ReadExactlyAsync(next).AsTask().WaitAsync(s_limit);
        Assert.Equal("c NOOP\r\n"u8.ToArray(), next);
    }

    [Fact]
    public async Task WaitForPeerClose_TellsAHangUpFromMoreData()
    {
        await AcceptAsync();
        await _client!.SendAsync("x"u8.ToArray());
        Assert.False(await _connection!.WaitForPeerCloseAsync(CancellationToken.None).WaitAsync(s_limit)); // data: not a close

        var buffer = new byte[1];
        Assert.Equal(1, await _connection.Stream.ReadAsync(buffer)); // nothing was consumed by the wait
        _client.Shutdown(SocketShutdown.Send);
        Assert.True(await _connection.WaitForPeerCloseAsync(CancellationToken.None).WaitAsync(s_limit));
    }

    [Fact]
    public async Task WaitForPeerClose_EndsWhenCancelled()
    {
        await AcceptAsync();
        using var cancel = new CancellationTokenSource();
        var waiting = _connection!.WaitForPeerCloseAsync(cancel.Token);
        Assert.False(waiting.IsCompleted);

        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting.WaitAsync(s_limit));
    }

    [Fact]
    public async Task ACancelledRead_EndsTheConnectionsReads_WithACancellation()
    {
        await AcceptAsync();
        using var cancel = new CancellationTokenSource();
        var reading = _connection!.Stream.ReadAsync(new byte[16], cancel.Token).AsTask();
        Assert.False(reading.IsCompleted);

        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => reading.WaitAsync(s_limit));
        Assert.Equal(0, await _connection.Stream.ReadAsync(new byte[16]).AsTask().WaitAsync(s_limit)); // shut down for receiving
        await _connection.Stream.WriteAsync("* BYE\r\n"u8.ToArray()); // writing still works (a BYE after a timeout)
        var bye = new byte[7];
        Assert.Equal(7, await _client!.ReceiveAsync(bye).WaitAsync(s_limit));
    }

    [Fact]
    public async Task ACancelledWrite_ThatHadToWait_EndsWithACancellation_AndEndsTheConnection()
    {
        await AcceptAsync();
        using var cancel = new CancellationTokenSource();

        // More than loopback's socket buffers take while the client reads nothing: the write has to wait.
        var writing = _connection!.Stream.WriteAsync(new byte[32 << 20], cancel.Token).AsTask();
        Assert.False(writing.IsCompleted);

        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => writing.WaitAsync(s_limit));
        var buffer = new byte[1 << 16];
        while (await _client!.ReceiveAsync(buffer).WaitAsync(s_limit) > 0)
        {
            // what was sent before the shutdown, then its end
        }
    }

    [Fact]
    public async Task AReadOrWrite_WithATokenCancelledAlready_IsCancelled()
    {
        await AcceptAsync();
        using var cancel = new CancellationTokenSource();
        await cancel.CancelAsync();
        await _client!.SendAsync("a NOOP\r\n"u8.ToArray()); // a read could complete at once: it still must not

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => _connection!.Stream.ReadAsync(new byte[16], cancel.Token).AsTask());
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => _connection!.Stream.WriteAsync("* OK\r\n"u8.ToArray(), cancel.Token).AsTask());
    }

    [Fact]
    public async Task AWaitingReadWithAToken_WhenThePeerResets_FailsWithAnIOException_OverTheSocketError()
    {
        await AcceptAsync();
        using var cancel = new CancellationTokenSource();
        var reading = _connection!.Stream.ReadAsync(new byte[16], cancel.Token).AsTask();
        Assert.False(reading.IsCompleted);

        _client!.LingerState = new LingerOption(true, 0);
        _client.Close(); // a reset, not an orderly end

        var failure = await Assert.ThrowsAsync<IOException>(() => reading.WaitAsync(s_limit));
        Assert.Equal(SocketError.ConnectionReset, Assert.IsType<SocketException>(failure.InnerException).SocketErrorCode);
    }

    [Fact]
    public async Task Abort_EndsAPendingRead_AndFiresConnectionClosed()
    {
        await AcceptAsync();
        var closed = _connection!.ConnectionClosed;
        var reading = _connection.Stream.ReadAsync(new byte[16]).AsTask();

        _connection.Abort(new ConnectionAbortedException("test"));

        Assert.Equal(0, await reading.WaitAsync(s_limit));
        Assert.True(closed.IsCancellationRequested);
        Assert.Equal(0, await _client!.ReceiveAsync(new byte[1]).WaitAsync(s_limit));
    }

    [Fact]
    public async Task Dispose_ClosesTheSocket_Once()
    {
        await AcceptAsync();
        await _connection!.DisposeAsync();
        await _connection.DisposeAsync();

        Assert.Equal(0, await _client!.ReceiveAsync(new byte[1]).WaitAsync(s_limit));
    }

    [Fact]
    public async Task ShutdownAndAbort_AfterDispose_DoNothing()
    {
        // A kick or the shutdown's end may reach a session whose connection has just closed.
        await AcceptAsync();
        await _connection!.DisposeAsync();

        _connection.Socket.Shutdown(SocketShutdown.Both);
        _connection.Abort(new ConnectionAbortedException("late"));

        Assert.Equal(0, await _client!.ReceiveAsync(new byte[1]).WaitAsync(s_limit));
    }

    [Fact]
    public async Task Dispose_EndsTheAcceptLoop()
    {
        _listener = Bind(0);
        var accepting = _listener.AcceptAsync().AsTask();

        _listener.Dispose();

        Assert.Null(await accepting.WaitAsync(s_limit));
        Assert.Null(await _listener.AcceptAsync().AsTask().WaitAsync(s_limit));
    }

    [Fact]
    public async Task StartAccepting_HandsOverEveryConnection_OnTheEnginesThreads_UntilUnbound()
    {
        _listener = Bind(0);
        var accepted = System.Threading.Channels.Channel.CreateUnbounded<(ImapSocketConnection Connection, bool OnEngineThread, bool OnLoop)>();
        var accepting = _listener.StartAccepting((connection, onEngineThread) =>
            accepted.Writer.TryWrite((connection, onEngineThread, EpollLoop.Current is not null)));

        var clients = new List<Socket>();
        var connections = new List<ImapSocketConnection>();
        try
        {
            for (var i = 0; i < 8; i++)
            {
                var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                clients.Add(client);
                await client.ConnectAsync(_listener.EndPoint);
            }

            for (var i = 0; i < clients.Count; i++)
            {
                var (connection, onEngineThread, onLoop) = await accepted.Reader.ReadAsync().AsTask().WaitAsync(s_limit);
                connections.Add(connection);
                var epoll = _engine is EpollEngine;
                Assert.Equal(epoll, onEngineThread);
                Assert.Equal(epoll, onLoop); // said so only where it is so: there the callback must not block
                Assert.True(NoDelay(connection));
            }

            // Each client has its own connection, and each connection's stream reaches its client.
            Assert.Equal(
                clients.Select(c => c.LocalEndPoint!.ToString()).Order(),
                connections.Select(c => c.RemoteEndPoint!.ToString()).Order());
            foreach (var connection in connections)
            {
                await connection.Stream.WriteAsync("* OK\r\n"u8.ToArray());
                var client = clients.Single(c => c.LocalEndPoint!.Equals(connection.RemoteEndPoint));
                var greeting = new byte[6];
                Assert.Equal(6, await client.ReceiveAsync(greeting).WaitAsync(s_limit));
            }

            Assert.False(accepting.IsCompleted);
            _listener.Dispose();
            await accepting.WaitAsync(s_limit);

            using var late = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            var refused = await Assert.ThrowsAsync<SocketException>(() => late.ConnectAsync(_listener.EndPoint).WaitAsync(s_limit));
            Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);
            Assert.False(accepted.Reader.TryRead(out _));
        }
        finally
        {
            foreach (var connection in connections)
            {
                await connection.DisposeAsync();
            }

            clients.ForEach(c => c.Dispose());
        }
    }

    [Fact]
    public async Task StartAccepting_AfterUnbind_EndsAtOnce()
    {
        _listener = Bind(0);
        _listener.Dispose();

        await _listener.StartAccepting((_, _) => throw new InvalidOperationException("nothing to accept")).WaitAsync(s_limit);
    }

    [Fact]
    public async Task BindingAPortInUse_IsAnAddressInUseError()
    {
        _listener = Bind(0);

        Assert.Throws<AddressInUseException>(() => Bind(_listener.EndPoint.Port));
    }

    [Fact]
    public async Task Features_HoldWhatIsSet()
    {
        await AcceptAsync();
        IFeatureCollection features = _connection!.Features;
        var lifetime = new LifetimeNotification();
        var revision = features.Revision;
        Assert.Empty(features);

        features.Set<IConnectionLifetimeNotificationFeature>(lifetime);
        features.Set<IConnectionItemsFeature>(new ItemsFeature());
        features.Set<IConnectionIdFeature>(new IdFeature());
        features.Set<IConnectionIdFeature>(null);

        Assert.Same(lifetime, features.Get<IConnectionLifetimeNotificationFeature>());
        Assert.NotNull(features.Get<IConnectionItemsFeature>());
        Assert.Null(features.Get<IConnectionIdFeature>());
        Assert.Null(features.Get<IConnectionHeartbeatFeature>());
        Assert.True(features.Revision > revision);
        Assert.Equal(2, features.Count());
    }

    /// <summary>One connection, accepted as the proxy accepts them (the epoll engine: on its own threads, with accept4).</summary>
    private async Task AcceptAsync()
    {
        _listener = Bind(0);
        _client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var accepted = new TaskCompletionSource<ImapSocketConnection>(TaskCreationOptions.RunContinuationsAsynchronously);
        _ = _listener.StartAccepting((connection, _) => accepted.TrySetResult(connection));
        await _client.ConnectAsync(_listener.EndPoint);
        _connection = await accepted.Task.WaitAsync(s_limit);
    }

    /// <summary>Whether the connection's socket sends without delay, asked of the engine that owns it.</summary>
    private static bool NoDelay(ImapSocketConnection connection) => connection.Stream switch
    {
        EpollStream epoll => epoll.Socket.NoDelay,
        SocketStream dotnet => dotnet.Socket.NoDelay,
        var other => throw new InvalidOperationException(other.GetType().Name),
    };

    private ImapListenSocket Bind(int port) => ImapListenSocket.Bind(new IPEndPoint(IPAddress.Loopback, port), _engine, NullLogger.Instance);

    private sealed class LifetimeNotification : IConnectionLifetimeNotificationFeature
    {
        public CancellationToken ConnectionClosedRequested { get; set; }

        public void RequestClose()
        {
        }
    }

    private sealed class ItemsFeature : IConnectionItemsFeature
    {
        public IDictionary<object, object?> Items { get; set; } = new Dictionary<object, object?>();
    }

    private sealed class IdFeature : IConnectionIdFeature
    {
        public string ConnectionId { get; set; } = "x";
    }
}
