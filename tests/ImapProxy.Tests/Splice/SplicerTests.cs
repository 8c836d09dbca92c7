using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using ImapProxy.Backends;
using ImapProxy.Configuration;
using ImapProxy.Connections.Transport;
using ImapProxy.Connections.Transport.Epoll;
using ImapProxy.Splice;
using ImapProxy.Telemetry;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Sockets;
using ImapProxy.Testing.Telemetry;
using ImapProxy.Tls;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace ImapProxy.Tests.Splice;

/// <summary>
/// The splice between a client connection and a backend connection, both real loopback sockets: how each kind of
/// end is reported, and that nothing is left running or waiting. Every case runs with a plaintext client and with a
/// TLS client (a real TLS session over the client socket), on either socket engine: with the epoll engine both are
/// spliced by <see cref="EpollSplice"/>'s event handlers (TLS through the connection's record layer), with .NET's
/// sockets by the copy loops (TLS on the TLS stream).
/// </summary>
public sealed class SplicerTests : IAsyncLifetime
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);

    private readonly EpollEngine _epoll = new(1, inlineContinuations: true, NullLogger.Instance);
    private readonly TestMeterFactory _meters = new();
    private SpliceControl _control = new();
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "splicer-tests-" + Guid.NewGuid().ToString("N"));
    private Socket? _peer; // the backend's end
    private Socket? _client; // the client's end
    private Socket? _clientSide; // the proxy's socket towards the client
    private BackendConnection? _backend;
    private SslStream? _serverTls;
    private SslStream? _clientTls; // the client's end of the TLS session, when the case runs with TLS
    private Stream? _clientStream; // the proxy's stream towards the client

    public static TheoryData<SocketEngineKind, bool> Modes => new()
    {
        { SocketEngineKind.DotNet, false },
        { SocketEngineKind.DotNet, true },
        { SocketEngineKind.Epoll, false },
        { SocketEngineKind.Epoll, true },
    };

    public Task InitializeAsync() => Task.CompletedTask;

    // xunit 2 disposes a test class through IDisposable or IAsyncLifetime only, never IAsyncDisposable.
    public async Task DisposeAsync()
    {
        if (_backend is not null)
        {
            await _backend.DisposeAsync();
        }

        _peer?.Dispose();
        if (_serverTls is not null)
        {
            await _serverTls.DisposeAsync();
        }

        if (_clientTls is not null)
        {
            await _clientTls.DisposeAsync();
        }

        _client?.Dispose();
        _clientStream?.Dispose(); // off the engine before its socket is closed
        _clientSide?.Dispose();
        _epoll.Dispose();
        _meters.Dispose();
        if (System.IO.Directory.Exists(_directory))
        {
            System.IO.Directory.Delete(_directory, recursive: true);
        }
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task BytesFlowBothWays_AndTheClientsCloseEndsIt(SocketEngineKind engine, bool tls)
    {
        var splice = await StartAsync(engine, tls);

        await SendFromClientAsync("a1 NOOP\r\n");
        Assert.Equal("a1 NOOP\r\n", await ReceiveAtPeerAsync(9));
        await _peer!.SendAsync("a1 OK NOOP completed.\r\n"u8.ToArray());
        Assert.Equal("a1 OK NOOP completed.\r\n", await ReadClientAsync(23));

        await CloseClientAsync();
        await BackendSeesTheEndAndClosesAsync();
        var result = await splice.WaitAsync(s_limit);

        Assert.Equal(SpliceOutcome.ClientClosed, result.Outcome);
        Assert.Empty(_backend!.TakePending()); // what the hand-over received is not kept for the session's life
        Assert.Equal(9, result.BytesFromClient);
        Assert.Equal(23, result.BytesFromBackend);
        Assert.True(result.AtResponseBoundary);
        Assert.False(_control.StopRequested);
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task TheClientsEnd_ReachesTheBackend_AndItsLastAnswersStillReachTheClient(SocketEngineKind engine, bool tls)
    {
        var splice = await StartAsync(engine, tls);

        // A script that sends its last command and shuts down its sending side (ncat, nc -N) gets the answers, as
        // it would from the backend directly.
        await SendFromClientAsync("a9 LOGOUT\r\n");
        await CloseClientAsync();
        Assert.Equal("a9 LOGOUT\r\n", await ReceiveAtPeerAsync(11));
        Assert.Equal(0, await _peer!.ReceiveAsync(new byte[1]).WaitAsync(s_limit)); // the end, passed on
        Assert.False(splice.IsCompleted);

        const string Answer = "* BYE Logging out\r\na9 OK Logout completed.\r\n";
        await _peer.SendAsync(Encoding.ASCII.GetBytes(Answer));
        _peer.Shutdown(SocketShutdown.Send);
        Assert.Equal(Answer, await ReadClientAsync(Answer.Length));
        var result = await splice.WaitAsync(s_limit);

        Assert.Equal(SpliceOutcome.ClientClosed, result.Outcome);
        Assert.Equal(11, result.BytesFromClient);
        Assert.Equal(Answer.Length, result.BytesFromBackend);
        Assert.True(result.BackendSaidBye);
        Assert.False(_control.StopRequested);
    }

    [Theory]
    [InlineData(SocketEngineKind.DotNet)]
    [InlineData(SocketEngineKind.Epoll)]
    public async Task TlsClosenotify_EndsTheClientsSide_AndTheBackendsLastAnswerStillReachesIt(SocketEngineKind engine)
    {
        var splice = await StartAsync(engine, tls: true);

        await SendFromClientAsync("a9 LOGOUT\r\n");
        await _clientTls!.ShutdownAsync().WaitAsync(s_limit); // close_notify; the TCP connection stays open both ways
        Assert.Equal("a9 LOGOUT\r\n", await ReceiveAtPeerAsync(11));
        Assert.Equal(0, await _peer!.ReceiveAsync(new byte[1]).WaitAsync(s_limit));

        await _peer.SendAsync("* BYE Logging out\r\n"u8.ToArray());
        _peer.Shutdown(SocketShutdown.Send);
        Assert.Equal("* BYE Logging out\r\n", await ReadClientAsync(19));
        var result = await splice.WaitAsync(s_limit);

        Assert.Equal(SpliceOutcome.ClientClosed, result.Outcome);
        Assert.Equal(19, result.BytesFromBackend);
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task ABackendThatStaysOpenAfterTheClientsEnd_IsStoppedAfterTheLimit(SocketEngineKind engine, bool tls)
    {
        _control = new SpliceControl(clientEndLimit: TimeSpan.FromMilliseconds(100));
        var splice = await StartAsync(engine, tls);

        await CloseClientAsync();
        Assert.Equal(0, await _peer!.ReceiveAsync(new byte[1]).WaitAsync(s_limit)); // told, but it stays
        var result = await splice.WaitAsync(s_limit);

        Assert.Equal(SpliceOutcome.Cancelled, result.Outcome);
        Assert.True(_control.StopRequested);
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task BackendClose_EndsItWithoutTheClientDoingAnything(SocketEngineKind engine, bool tls)
    {
        var splice = await StartAsync(engine, tls);

        await _peer!.SendAsync("* BYE Logging out\r\n"u8.ToArray());
        _peer.Shutdown(SocketShutdown.Send);
        var result = await splice.WaitAsync(s_limit);

        Assert.Equal(SpliceOutcome.BackendClosed, result.Outcome);
        Assert.True(result.BackendSaidBye);
        Assert.Equal("* BYE Logging out\r\n", await ReadClientAsync(19));
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task Kick_EndsAnIdleSessionAsCancelledAtAResponseBoundary(SocketEngineKind engine, bool tls)
    {
        var splice = await StartAsync(engine, tls);
        await SendFromClientAsync("a2 IDLE\r\n");
        Assert.Equal("a2 IDLE\r\n", await ReceiveAtPeerAsync(9));
        await _peer!.SendAsync("+ idling\r\n"u8.ToArray());
        Assert.Equal("+ idling\r\n", await ReadClientAsync(10));

        _control.RequestStop();
        var result = await splice.WaitAsync(s_limit);

        Assert.Equal(SpliceOutcome.Cancelled, result.Outcome);
        Assert.True(result.AtResponseBoundary);
        Assert.False(result.BackendSaidBye);
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task Kick_EndsASpliceStuckOnAClientThatDoesNotRead(SocketEngineKind engine, bool tls)
    {
        var splice = await StartAsync(engine, tls, smallClientWindow: true);
        var literal = new byte[1024 * 1024];
        var sending = _peer!.SendAsync(literal); // far more than the client window: the splice's write blocks

        await WaitForTheSpliceToBlockOnTheClientAsync();

        _control.RequestStop();
        var result = await splice.WaitAsync(s_limit);

        Assert.Equal(SpliceOutcome.Cancelled, result.Outcome);
        Assert.False(result.AtResponseBoundary); // inside the literal: no BYE may follow
        await sending.WaitAsync(s_limit); // loopback buffers take the rest
        var drained = new byte[64 * 1024];
        while (await _peer.ReceiveAsync(drained).WaitAsync(s_limit) != 0)
        {
            // The proxy shut its side down: the backend reads to the end of the stream.
        }
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task AClientThatReadsLate_GetsEveryByte_OnceItReads(SocketEngineKind engine, bool tls)
    {
        // The splice's write to the client waits for room, so the socket must report room again: the epoll engine
        // watches a socket for writing only from its first write that found none.
        var splice = await StartAsync(engine, tls, smallClientWindow: true);
        var download = new byte[1024 * 1024];
        Random.Shared.NextBytes(download);
        var sending = _peer!.SendAsync(download);

        await WaitForTheSpliceToBlockOnTheClientAsync();

        Stream client = _clientTls ?? (Stream)new NetworkStream(_client!, ownsSocket: false);
        var atClient = new byte[download.Length];
        await client.ReadExactlyAsync(atClient).AsTask().WaitAsync(s_limit);
        Assert.Equal(download, atClient);
        await sending.WaitAsync(s_limit);

        _control.RequestStop();
        Assert.Equal(download.Length, (await splice.WaitAsync(s_limit)).BytesFromBackend);
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task BytesReadDuringTheHandoverReachTheClientFirst(SocketEngineKind engine, bool tls)
    {
        var splice = await StartAsync(engine, tls, leftover: "* 3 EXISTS\r\n"u8.ToArray());

        Assert.Equal("* 3 EXISTS\r\n", await ReadClientAsync(12));
        await CloseClientAsync();
        await BackendSeesTheEndAndClosesAsync();
        var result = await splice.WaitAsync(s_limit);
        Assert.Equal(12, result.BytesFromBackend);
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task StopRequestedBeforeTheSpliceStarts_EndsItAtOnce_AndTheHandoverBytesAreLetGo(SocketEngineKind engine, bool tls)
    {
        _control.RequestStop(); // a kick that raced the login: no read is pending when the cancel is made
        var splice = await StartAsync(engine, tls, leftover: "* 3 EXISTS\r\n"u8.ToArray());

        var result = await splice.WaitAsync(s_limit);

        Assert.Equal(SpliceOutcome.Cancelled, result.Outcome);
        Assert.Empty(_backend!.TakePending());
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task WhatTheClientPipelinedBehindItsLoginReachesTheBackendFirst(SocketEngineKind engine, bool tls)
    {
        var splice = await StartAsync(engine, tls, pipelined: "b SELECT INBOX\r\n"u8.ToArray());

        await SendFromClientAsync("c NOOP\r\n");
        Assert.Equal("b SELECT INBOX\r\nc NOOP\r\n", await ReceiveAtPeerAsync(24));
        await CloseClientAsync();
        await BackendSeesTheEndAndClosesAsync();
        var result = await splice.WaitAsync(s_limit);
        Assert.Equal(SpliceOutcome.ClientClosed, result.Outcome);
        Assert.Equal(24, result.BytesFromClient);
    }

    [Fact]
    public async Task TlsOnEpoll_TheBuffersTheHandshakeLeftAndLargeAnswersGrew_GoBack_SmallOnesStay()
    {
        var splice = await StartAsync(SocketEngineKind.Epoll, tls: true);
        // A second view of the connection the splice runs, taken on its thread (nothing there runs concurrently).
        var layer = await OnLoopAsync(() => TlsRecordLayer.TryTakeOver(_serverTls!, out _));
        Assert.NotNull(layer);
        try
        {
            // The handshake left buffers in both BIOs (384 and 1,036 bytes with .NET's client); the splice gives them
            // back when it starts. The backend speaks first, so the client's direction sees nothing after the start.
            await _peer!.SendAsync("* OK still there\r\n"u8.ToArray());
            Assert.Equal("* OK still there\r\n", await ReadClientAsync(18));
            var afterStart = await OnLoopAsync(() => layer.BufferCapacities);
            Assert.Equal(0, afterStart.Read);
            Assert.InRange(afterStart.Write, 1, TlsRecordLayer.KeepUpTo); // the short answer's record: small, so it stays

            await SendFromClientAsync("a1 NOOP\r\n");
            Assert.Equal("a1 NOOP\r\n", await ReceiveAtPeerAsync(9));
            var afterCommand = await OnLoopAsync(() => layer.BufferCapacities);
            Assert.InRange(afterCommand.Read, 1, TlsRecordLayer.KeepUpTo);
            Assert.Equal(afterStart.Write, afterCommand.Write);

            // A large answer grows the write BIO's buffer; once it is sent, that buffer goes back.
            var answer = new byte[64 * 1024];
            Array.Fill(answer, (byte)'x');
            await _peer.SendAsync(answer);
            Assert.Equal(new string('x', answer.Length), await ReadClientAsync(answer.Length));
            Assert.Equal(afterCommand.Read, (await OnLoopAsync(() => layer.BufferCapacities)).Read);
            Assert.True((await OnLoopAsync(() => layer.BufferCapacities)).Write <= TlsRecordLayer.KeepUpTo);
        }
        finally
        {
            layer!.Release();
        }

        _control.RequestStop();
        Assert.Equal(SpliceOutcome.Cancelled, (await splice.WaitAsync(s_limit)).Outcome);
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task LargeTransfersBothWaysArriveIntact(SocketEngineKind engine, bool tls)
    {
        var splice = await StartAsync(engine, tls);
        var upload = new byte[300 * 1024];
        var download = new byte[700 * 1024];
        Random.Shared.NextBytes(upload);
        Random.Shared.NextBytes(download);

        var atPeer = new byte[upload.Length];
        var receiving = ReceiveExactlyAtPeerAsync(atPeer);
        Stream client = _clientTls ?? (Stream)new NetworkStream(_client!, ownsSocket: false);
        await client.WriteAsync(upload);
        await client.FlushAsync();
        await receiving.WaitAsync(s_limit);
        Assert.Equal(upload, atPeer);

        var atClient = new byte[download.Length];
        var reading = client.ReadExactlyAsync(atClient).AsTask();
        await _peer!.SendAsync(download);
        await reading.WaitAsync(s_limit);
        Assert.Equal(download, atClient);

        _control.RequestStop();
        var result = await splice.WaitAsync(s_limit);
        Assert.Equal(SpliceOutcome.Cancelled, result.Outcome);
        Assert.Equal(upload.Length, result.BytesFromClient);
        Assert.Equal(download.Length, result.BytesFromBackend);
    }

    private async Task<Task<SpliceResult>> StartAsync(SocketEngineKind engine, bool tls, byte[]? leftover = null, byte[]? pipelined = null, bool smallClientWindow = false)
    {
        (var socket, _peer) = await LoopbackSockets.ConnectPairAsync();
        var stream = Attach(engine, socket);
        // What the hand-over leaves behind: bytes received after the login OK.
        _backend = new BackendConnection(new BackendEndpoint("b1", "127.0.0.1", 143, 1), (ISocketControl)stream, stream, leftover ?? []);

        // The client: a small window on request, so that a client that does not read blocks the splice's writes soon.
        (_client, _clientSide) = await LoopbackSockets.ConnectPairAsync(client =>
        {
            if (smallClientWindow)
            {
                client.ReceiveBufferSize = 4096;
            }
        });
        if (smallClientWindow)
        {
            _clientSide.SendBufferSize = 4096;
        }

        var metrics = new ImapProxyMetrics(_meters);
        _clientStream = Attach(engine, _clientSide);
        if (!tls)
        {
            Assert.Equal(engine == SocketEngineKind.Epoll, EpollSplice.CanSplice(_clientStream, stream));
            return SpliceEnd.Start(_clientStream, _clientStream, (ISocketControl)_clientStream, pipelined ?? ReadOnlyMemory<byte>.Empty, _backend, metrics, _control);
        }

        // Both ends of a real TLS session over the client connection, as the proxy's session layers it.
        var certificate = TestCertificates.CreateSelfSigned(_directory);
        _serverTls = new SslStream(_clientStream, leaveInnerStreamOpen: true);
        _clientTls = new SslStream(
            new NetworkStream(_client, ownsSocket: false),
            leaveInnerStreamOpen: true,
            (_, cert, _, _) => cert?.GetRawCertData().AsSpan().SequenceEqual(certificate.Certificate.RawData) == true);
        await Task.WhenAll(
            _serverTls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions { ServerCertificate = certificate.Certificate }),
            _clientTls.AuthenticateAsClientAsync("localhost")).WaitAsync(s_limit);
        if (engine == SocketEngineKind.Epoll)
        {
            // The TLS session is spliced through its record layer: nothing may stop the takeover.
            Assert.Null(OpenSslNative.UnavailableReason);
            Assert.Equal(0, TlsRecordLayer.BufferedBytes(_serverTls));
        }

        return SpliceEnd.Start(_serverTls, _clientStream, (ISocketControl)_clientStream, pipelined ?? ReadOnlyMemory<byte>.Empty, _backend, metrics, _control);
    }

    /// <summary>
    /// Until the splice is stuck on a client that reads nothing: its receive buffer holds data and a write to it is still
    /// under way. A state the splice reaches and then keeps until the client reads; nothing signals it, so it is looked
    /// at every few milliseconds (bounded by the test's limit), not waited for after a fixed time.
    /// </summary>
    private async Task WaitForTheSpliceToBlockOnTheClientAsync()
    {
        var deadline = DateTime.UtcNow + s_limit;
        while (!(_control.ClientWriteInProgress && _client!.Available > 0))
        {
            Assert.True(DateTime.UtcNow < deadline, "the splice never blocked on the client");
            await Task.Delay(10);
        }
    }

    /// <summary>
    /// Runs <paramref name="read"/> on the engine thread, after whatever event it is handling now (the splice trims at
    /// the end of each event, so what this sees is what the session keeps until its next one).
    /// </summary>
    private async Task<T> OnLoopAsync<T>(Func<T> read)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        _epoll.Loops[0].Execute(_ => done.SetResult(read()), null);
        return await done.Task.WaitAsync(s_limit);
    }

    /// <summary>The proxy's stream over one of its sockets; both of a session share one epoll thread, as in the proxy.</summary>
    private Stream Attach(SocketEngineKind engine, Socket socket) =>
        engine == SocketEngineKind.Epoll ? new EpollStream(new EpollSocket(socket, _epoll.Loops[0])) : new SocketStream(socket);

    private async Task SendFromClientAsync(string text)
    {
        var bytes = Encoding.ASCII.GetBytes(text);
        if (_clientTls is null)
        {
            await _client!.SendAsync(bytes);
        }
        else
        {
            await _clientTls.WriteAsync(bytes);
            await _clientTls.FlushAsync();
        }
    }

    /// <summary>The client's side of the connection ends (for TLS: the transport under the session, as on a reset).</summary>
    private Task CloseClientAsync()
    {
        _client!.Shutdown(SocketShutdown.Send);
        return Task.CompletedTask;
    }

    /// <summary>What an IMAP server does when the client ends its side: reads up to that end, then closes.</summary>
    private async Task BackendSeesTheEndAndClosesAsync()
    {
        var rest = new byte[1024];
        while (await _peer!.ReceiveAsync(rest).WaitAsync(s_limit) != 0)
        {
        }

        _peer.Shutdown(SocketShutdown.Send);
    }

    private async Task ReceiveExactlyAtPeerAsync(byte[] buffer)
    {
        var received = 0;
        while (received < buffer.Length)
        {
            var n = await _peer!.ReceiveAsync(buffer.AsMemory(received));
            Assert.NotEqual(0, n);
            received += n;
        }
    }

    private async Task<string> ReceiveAtPeerAsync(int count)
    {
        var buffer = new byte[count];
        var received = 0;
        while (received < count)
        {
            var n = await _peer!.ReceiveAsync(buffer.AsMemory(received)).AsTask().WaitAsync(s_limit);
            Assert.NotEqual(0, n);
            received += n;
        }

        return Encoding.ASCII.GetString(buffer);
    }

    private async Task<string> ReadClientAsync(int count)
    {
        var buffer = new byte[count];
        if (_clientTls is not null)
        {
            await _clientTls.ReadExactlyAsync(buffer).AsTask().WaitAsync(s_limit);
        }
        else
        {
            var received = 0;
            while (received < count)
            {
                var n = await _client!.ReceiveAsync(buffer.AsMemory(received)).AsTask().WaitAsync(s_limit);
                Assert.NotEqual(0, n);
                received += n;
            }
        }

        return Encoding.ASCII.GetString(buffer);
    }
}

/// <summary>A splice's end as a task, for the tests to await: the owner a session would be.</summary>
internal sealed class SpliceEnd : ISpliceOwner
{
    private readonly TaskCompletionSource<SpliceResult> _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public static Task<SpliceResult> Start(Stream client, Stream clientTransport, ISocketControl clientSocket, ReadOnlyMemory<byte> fromClient, BackendConnection backend, ImapProxyMetrics metrics, SpliceControl control)
    {
        var end = new SpliceEnd();
        Splicer.Start(client, clientTransport, clientSocket, fromClient, backend, metrics, control, end);
        return end._ended.Task;
    }

    private TlsRecordLayer? _recordLayer;

    void ISpliceOwner.TlsTakenOver(TlsRecordLayer recordLayer) => _recordLayer = recordLayer;

    void ISpliceOwner.SpliceEnded(SpliceResult result, Exception? error)
    {
        _recordLayer?.Release(); // the test keeps the TLS stream and disposes it
        if (error is not null)
        {
            _ended.SetException(error);
        }
        else
        {
            _ended.SetResult(result);
        }
    }
}
