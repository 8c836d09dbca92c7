using System.Net;
using System.Net.Sockets;
using ImapProxy.Connections.Transport.Epoll;
using ImapProxy.Testing.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace ImapProxy.Tests.Connections.Transport;

/// <summary>
/// The epoll engine's sockets on real loopback connections: readiness tracking (drained sockets, the peer's close,
/// short reads), back-pressure, connects, the peer-close watch and disposal. The far end is a plain .NET socket.
/// </summary>
public sealed class EpollSocketTests : IDisposable
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);

    private readonly EpollEngine _engine = new(2, inlineContinuations: true, NullLogger.Instance);
    private readonly List<IDisposable> _owned = [];

    public void Dispose()
    {
        foreach (var owned in _owned)
        {
            owned.Dispose();
        }

        _engine.Dispose();
    }

    [Fact]
    public async Task BytesGoBothWays()
    {
        var (socket, peer) = await PairAsync();

        await peer.SendAsync("a1 NOOP\r\n"u8.ToArray());
        var buffer = new byte[64];
        var read = await ReceiveAtLeastAsync(socket, buffer, 9);
        Assert.Equal("a1 NOOP\r\n"u8.ToArray(), buffer[..read]);

        await socket.SendAsync("a1 OK\r\n"u8.ToArray()).AsTask().WaitAsync(s_limit);
        var reply = new byte[7];
        await ReceiveExactlyAsync(peer, reply);
        Assert.Equal("a1 OK\r\n"u8.ToArray(), reply);
    }

    [Fact]
    public async Task AZeroByteRead_WaitsForData_AndTakesNothing()
    {
        var (socket, peer) = await PairAsync();
        await DrainAsync(socket, peer);

        var waiting = socket.ReceiveAsync(Memory<byte>.Empty).AsTask();
        Assert.False(waiting.IsCompleted);
        await peer.SendAsync("x"u8.ToArray());

        Assert.Equal(0, await waiting.WaitAsync(s_limit));
        var buffer = new byte[4];
        Assert.Equal(1, await socket.ReceiveAsync(buffer).AsTask().WaitAsync(s_limit));
        Assert.Equal((byte)'x', buffer[0]);
    }

    [Fact]
    public async Task WhatArrivedBeforeTheSocketJoinedItsLoop_IsRead_AndSoIsTheEnd()
    {
        // A fresh socket waits for its first event rather than trying a receive; joining the loop must report what
        // is there already, or this read would wait forever.
        var (connecting, accepted) = await LoopbackSockets.ConnectPairAsync();
        _owned.Add(connecting);
        await connecting.SendAsync("early"u8.ToArray());
        connecting.Shutdown(SocketShutdown.Send);
        await LoopbackSockets.WaitForAvailableAsync(accepted, 5, s_limit);
        var socket = Own(new EpollSocket(accepted, _engine.NextLoop()), accepted);

        var buffer = new byte[64];
        Assert.Equal(5, await socket.ReceiveAsync(buffer).AsTask().WaitAsync(s_limit));
        Assert.Equal("early"u8.ToArray(), buffer[..5]);
        Assert.Equal(0, await socket.ReceiveAsync(buffer).AsTask().WaitAsync(s_limit));
    }

    [Fact]
    public async Task AZeroByteRead_WokenForBytesAReadTookAlready_GoesOnWaiting()
    {
        // The loop has collected an arrival's event, and before it handles it a read on another thread takes the
        // bytes and posts a zero-byte read: that read is woken for nothing and must not complete (its caller would
        // then take a buffer and hold it in a read for as long as the session idles). Forced here: the loop is held
        // while both a blocker's and the socket's events are queued, then held again inside the blocker's handler.
        var loop = _engine.Loops[0];
        var (blockerPeer, blockerAccepted) = await LoopbackSockets.ConnectPairAsync();
        var (peer, accepted) = await LoopbackSockets.ConnectPairAsync();
        var (markerPeer, markerAccepted) = await LoopbackSockets.ConnectPairAsync();
        _owned.AddRange([blockerPeer, peer, markerPeer]);
        var blocker = Own(new EpollSocket(blockerAccepted, loop), blockerAccepted);
        var socket = Own(new EpollSocket(accepted, loop), accepted);
        var marker = Own(new EpollSocket(markerAccepted, loop), markerAccepted);
        using var inHandler = new ManualResetEventSlim();
        var blocking = new BlockingListener(inHandler);
        await Task.Run(() => loop.Execute(_ => blocker.SetListener(blocking), null));
        var markerRead = marker.ReceiveAsync(new byte[1]).AsTask();

        // A first arrival, counted and left unread (a zero-byte read takes nothing): the read below tries the
        // socket without waiting for the loop, which is about to be held.
        await peer.SendAsync("a"u8.ToArray());
        Assert.Equal(0, await socket.ReceiveAsync(Memory<byte>.Empty).AsTask().WaitAsync(s_limit));

        using var gate = new ManualResetEventSlim();
        await HoldAsync(loop, gate);
        await blockerPeer.SendAsync("b"u8.ToArray());
        await peer.SendAsync("bc"u8.ToArray());
        await LoopbackSockets.WaitForAvailableAsync(accepted, 3, s_limit);
        gate.Set(); // one epoll_wait collects both: the blocker's handler runs first and holds the loop
        await blocking.Entered.WaitAsync(s_limit);

        Assert.Equal(3, await socket.ReceiveAsync(new byte[16]).AsTask().WaitAsync(s_limit));
        var waiting = socket.ReceiveAsync(Memory<byte>.Empty).AsTask();
        inHandler.Set(); // the socket's collected event is handled now, for bytes that are gone
        await markerPeer.SendAsync("m"u8.ToArray());
        Assert.Equal(1, await markerRead.WaitAsync(s_limit));

        Assert.False(waiting.IsCompleted, "a zero-byte read woken for nothing completed");
        await peer.SendAsync("d"u8.ToArray());
        Assert.Equal(0, await waiting.WaitAsync(s_limit));
    }

    [Fact]
    public async Task AReadOnADrainedSocket_WaitsForTheNextArrival()
    {
        var (socket, peer) = await PairAsync();
        await peer.SendAsync("first"u8.ToArray());
        var buffer = new byte[64];
        Assert.Equal(5, await ReceiveAtLeastAsync(socket, buffer, 5)); // short: the socket is drained now

        var next = socket.ReceiveAsync(buffer).AsTask();
        Assert.False(next.IsCompleted);
        await peer.SendAsync("second"u8.ToArray());

        Assert.Equal(6, await next.WaitAsync(s_limit));
        Assert.Equal("second"u8.ToArray(), buffer[..6]);
    }

    [Fact]
    public async Task DataAndThePeersCloseReportedTogether_TheCloseIsStillSeen()
    {
        // The data and the FIN may reach the engine as one event, or as two: either way the read after the data
        // must see the end of the stream instead of waiting for an event that will never come. Repeated so that
        // both orders are taken.
        for (var i = 0; i < 50; i++)
        {
            var (connecting, accepted) = await LoopbackSockets.ConnectPairAsync();
            using var peer = connecting;
            peer.Send("bytes"u8);
            peer.Shutdown(SocketShutdown.Send);
            var socket = Own(new EpollSocket(accepted, _engine.NextLoop()), accepted);

            var buffer = new byte[64];
            Assert.Equal(5, await ReceiveAtLeastAsync(socket, buffer, 5));
            Assert.Equal(0, await socket.ReceiveAsync(buffer).AsTask().WaitAsync(s_limit));
            Assert.Equal(0, await socket.ReceiveAsync(buffer).AsTask().WaitAsync(s_limit)); // and again
        }
    }

    [Fact]
    public async Task ThePeersClose_EndsAWaitingRead()
    {
        var (socket, peer) = await PairAsync();
        await DrainAsync(socket, peer);
        var waiting = socket.ReceiveAsync(new byte[16]).AsTask();
        Assert.False(waiting.IsCompleted);

        peer.Shutdown(SocketShutdown.Send);

        Assert.Equal(0, await waiting.WaitAsync(s_limit));
    }

    [Fact]
    public async Task ShuttingDownForReceiving_EndsAWaitingRead_AndWritesStillWork()
    {
        // How the splice is stopped from another thread (a kick, the shutdown).
        var (socket, peer) = await PairAsync();
        await DrainAsync(socket, peer);
        var waiting = socket.ReceiveAsync(Memory<byte>.Empty).AsTask();

        socket.Shutdown(SocketShutdown.Receive);

        Assert.Equal(0, await waiting.WaitAsync(s_limit));
        Assert.Equal(0, await socket.ReceiveAsync(new byte[16]).AsTask().WaitAsync(s_limit));
        await socket.SendAsync("* BYE\r\n"u8.ToArray()).AsTask().WaitAsync(s_limit);
        var bye = new byte[7];
        await ReceiveExactlyAsync(peer, bye);
    }

    [Fact]
    public async Task AWriteLargerThanTheSocketTakes_WaitsForRoom_AndDeliversEveryByte()
    {
        var (socket, peer) = await PairAsync(small => small.ReceiveBufferSize = 16 * 1024);
        var data = new byte[4 * 1024 * 1024];
        Random.Shared.NextBytes(data);

        var sending = socket.SendAsync(data).AsTask();
        Assert.False(sending.IsCompleted); // the peer reads nothing yet: the write waits for room

        var received = new byte[data.Length];
        await ReceiveExactlyAsync(peer, received);
        await sending.WaitAsync(s_limit);
        Assert.True(data.AsSpan().SequenceEqual(received));
    }

    [Fact]
    public async Task AWriteToAPeerThatReset_FailsWithASocketError()
    {
        var (socket, peer) = await PairAsync();
        peer.LingerState = new LingerOption(true, 0);
        peer.Close(); // RST

        var error = await Assert.ThrowsAsync<SocketException>(async () =>
        {
            // The first writes may still be taken before the reset arrives; a bounded number of them.
            for (var i = 0; i < 1000; i++)
            {
                await socket.SendAsync(new byte[1024]).AsTask().WaitAsync(s_limit);
            }
        });
        Assert.Contains(error.SocketErrorCode, new[] { SocketError.ConnectionReset, SocketError.Shutdown });
    }

    [Fact]
    public async Task WaitForPeerClose_TellsMoreDataFromAClose_AndConsumesNothing()
    {
        var (socket, peer) = await PairAsync();
        await DrainAsync(socket, peer);
        var waiting = socket.WaitForPeerCloseAsync(CancellationToken.None);
        Assert.False(waiting.IsCompleted);

        await peer.SendAsync("y"u8.ToArray());
        Assert.False(await waiting.WaitAsync(s_limit));
        var buffer = new byte[4];
        Assert.Equal(1, await socket.ReceiveAsync(buffer).AsTask().WaitAsync(s_limit)); // still there

        peer.Shutdown(SocketShutdown.Send);
        Assert.True(await socket.WaitForPeerCloseAsync(CancellationToken.None).WaitAsync(s_limit));
    }

    [Fact]
    public async Task WaitForPeerClose_Cancelled_LeavesTheSocketUsable()
    {
        var (socket, peer) = await PairAsync();
        await DrainAsync(socket, peer);
        using var cancel = new CancellationTokenSource();
        var waiting = socket.WaitForPeerCloseAsync(cancel.Token);
        Assert.False(waiting.IsCompleted);

        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting.WaitAsync(s_limit));
        await peer.SendAsync("z"u8.ToArray());
        var buffer = new byte[4];
        Assert.Equal(1, await socket.ReceiveAsync(buffer).AsTask().WaitAsync(s_limit));

        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => socket.WaitForPeerCloseAsync(cancelled.Token));
    }

    [Fact]
    public async Task Connect_ToAListener_Connects_AndDisposingTheStreamClosesTheSocket()
    {
        using var listener = Listen();
        var accepting = listener.AcceptAsync();

        var stream = await _engine.ConnectAsync((IPEndPoint)listener.LocalEndPoint!, near: null, CancellationToken.None).AsTask().WaitAsync(s_limit);
        using var accepted = await accepting.WaitAsync(s_limit);
        _owned.Add(stream);

        await stream.WriteAsync("hello"u8.ToArray());
        var buffer = new byte[5];
        await ReceiveExactlyAsync(accepted, buffer);
        Assert.Equal("hello"u8.ToArray(), buffer);
        var socket = Assert.IsType<EpollStream>(stream).Socket;
        Assert.True(socket.NoDelay);
        Assert.Equal(accepted.RemoteEndPoint, socket.LocalEndPoint());

        // The stream owns the socket (no .NET socket behind it): its dispose is the close the peer sees.
        var registered = _engine.Handlers.Count;
        await stream.DisposeAsync();
        Assert.Equal(0, await accepted.ReceiveAsync(new byte[1]).WaitAsync(s_limit));
        Assert.Equal(registered - 1, _engine.Handlers.Count);
    }

    [Fact]
    public async Task Connect_JoinsTheLoopOfTheStreamNearIt()
    {
        using var listener = Listen();
        var accepting = listener.AcceptAsync();
        var (first, _) = await PairAsync();
        var near = new EpollStream(first);

        var stream = await _engine.ConnectAsync((IPEndPoint)listener.LocalEndPoint!, near, CancellationToken.None).AsTask().WaitAsync(s_limit);
        using var accepted = await accepting.WaitAsync(s_limit);
        _owned.Add(stream);

        Assert.Same(first.Loop, Assert.IsType<EpollStream>(stream).Socket.Loop);
    }

    [Fact]
    public async Task Connect_ToAClosedPort_IsRefused()
    {
        int port;
        using (var probe = Listen())
        {
            port = ((IPEndPoint)probe.LocalEndPoint!).Port;
        }

        var error = await Assert.ThrowsAsync<SocketException>(() => _engine.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), null, CancellationToken.None).AsTask().WaitAsync(s_limit));
        Assert.Equal(SocketError.ConnectionRefused, error.SocketErrorCode);
        Assert.Equal(0, _engine.Handlers.Count); // the failed socket left nothing registered
    }

    [Fact]
    public async Task Dispose_FailsAWaitingRead_AndFreesItsRegistration()
    {
        var (socket, peer) = await PairAsync();
        await DrainAsync(socket, peer);
        var registered = _engine.Handlers.Count;
        var waiting = socket.ReceiveAsync(new byte[16]).AsTask();

        socket.Dispose();

        await Assert.ThrowsAsync<ObjectDisposedException>(() => waiting.WaitAsync(s_limit));
        Assert.Equal(registered - 1, _engine.Handlers.Count);
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await socket.ReceiveAsync(new byte[16]));
    }

    [Fact]
    public async Task SocketsOutlivingTheirEngine_CloseQuietly_AndItsLoopsTakeNoMoreWork()
    {
        var engine = new EpollEngine(1, inlineContinuations: true, NullLogger.Instance);
        var (connecting, accepted) = await LoopbackSockets.ConnectPairAsync();
        _owned.Add(connecting);
        _owned.Add(accepted);
        var socket = new EpollSocket(accepted, engine.NextLoop());
        var waiting = socket.ReceiveAsync(new byte[16]).AsTask();

        engine.Dispose();

        // Its descriptors are closed; nothing may write to or control them any more (their numbers may be another
        // socket's by now): work is refused, and the socket leaves without touching them.
        Assert.Throws<SocketException>(() => socket.Loop.Execute(static _ => { }, null));
        socket.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => waiting.WaitAsync(s_limit));
        Assert.Equal(0, engine.Handlers.Count);
        using var fresh = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        Assert.Throws<SocketException>(() => new EpollSocket(fresh, socket.Loop));
    }

    [Fact]
    public async Task ManySessionsOnTwoLoops_EchoEveryByteInOrder()
    {
        // Both directions of 40 connections at once, messages of random sizes: what an engine bug (a lost wake-up,
        // a read marked drained too early, bytes taken twice) would show as a hang or corrupted data.
        const int Connections = 40;
        const int Messages = 60;
        var echoes = new List<Task>();
        for (var c = 0; c < Connections; c++)
        {
            var (socket, peer) = await PairAsync();
            echoes.Add(EchoAsync(socket));
            echoes.Add(TalkAsync(peer, c));
        }

        await Task.WhenAll(echoes).WaitAsync(TimeSpan.FromSeconds(60));

        static async Task EchoAsync(EpollSocket socket)
        {
            var buffer = new byte[8192];
            while (true)
            {
                _ = await socket.ReceiveAsync(Memory<byte>.Empty);
                var read = await socket.ReceiveAsync(buffer);
                if (read == 0)
                {
                    socket.Shutdown(SocketShutdown.Send);
                    return;
                }

                await socket.SendAsync(buffer.AsMemory(0, read));
            }
        }

        static async Task TalkAsync(Socket peer, int seed)
        {
            var random = new Random(seed);
            for (var m = 0; m < Messages; m++)
            {
                var message = new byte[random.Next(1, 40_000)];
                random.NextBytes(message);
                var sending = peer.SendAsync(message);
                var echoed = new byte[message.Length];
                await ReceiveExactlyAsync(peer, echoed);
                await sending;
                Assert.True(message.AsSpan().SequenceEqual(echoed), $"connection {seed}, message {m}");
            }

            peer.Shutdown(SocketShutdown.Send);
            Assert.Equal(0, await peer.ReceiveAsync(new byte[1]));
        }
    }

    [Fact]
    public async Task AReaderThatNeverWaits_YieldsTheLoop_ToItsOtherSockets()
    {
        // Two sockets on one loop. One has far more queued than a reader with a small buffer takes in 32 reads, none
        // of which comes back short, so each completes at once and its continuation (inline, on the loop thread)
        // reads again: a client pipelining faster than its session consumes. The other socket's bytes arrive while
        // that reader runs.
        var loop = _engine.Loops[0];
        var (floodConnecting, floodAccepted) = await LoopbackSockets.ConnectPairAsync();
        var (otherConnecting, otherAccepted) = await LoopbackSockets.ConnectPairAsync();
        _owned.Add(floodConnecting);
        _owned.Add(otherConnecting);
        var flood = Own(new EpollSocket(floodAccepted, loop), floodAccepted);
        var other = Own(new EpollSocket(otherAccepted, loop), otherAccepted);
        await DrainAsync(other, otherConnecting);

        const int total = 64 * 1024;
        await floodConnecting.SendAsync(new byte[total]);
        await LoopbackSockets.WaitForAvailableAsync(floodAccepted, total, s_limit);

        var consumed = 0;
        var otherRead = other.ReceiveAsync(new byte[16]).AsTask();
        Assert.False(otherRead.IsCompleted);
        var consumedWhenOtherRead = otherRead.ContinueWith(_ => Volatile.Read(ref consumed), TaskContinuationOptions.ExecuteSynchronously);

        async Task FloodAsync()
        {
            var buffer = new byte[16];
            while (consumed < total)
            {
                var read = await flood.ReceiveAsync(buffer);
                Assert.NotEqual(0, read);
                Volatile.Write(ref consumed, consumed + read);
            }
        }

        var reading = new TaskCompletionSource<Task>(TaskCreationOptions.RunContinuationsAsynchronously);
        await Task.Run(() => loop.Execute(_ =>
        {
            otherConnecting.Send("x"u8); // its event is there before the reader starts, and waits for the loop
            reading.SetResult(FloodAsync());
        }, null));

        Assert.InRange(await consumedWhenOtherRead.WaitAsync(s_limit), 16, total - 1);
        await (await reading.Task).WaitAsync(s_limit);
        Assert.Equal(total, Volatile.Read(ref consumed));
    }

    [Fact]
    public void HandlerTable_AReusedSlot_DoesNotAnswerToTheOldToken()
    {
        var table = new HandlerTable();
        var first = new Handler();
        var second = new Handler();

        var old = table.Add(first);
        Assert.Same(first, table.Get(old));
        table.Remove(old);
        var reused = table.Add(second);

        Assert.Equal((uint)old, (uint)reused); // same slot
        Assert.Null(table.Get(old));
        Assert.Same(second, table.Get(reused));
        table.Remove(old); // stale: changes nothing
        Assert.Same(second, table.Get(reused));
        Assert.Equal(1, table.Count);
    }

    /// <summary>Blocks the loop's thread until <paramref name="gate"/> opens; returns once it is blocked.</summary>
    private static async Task HoldAsync(EpollLoop loop, ManualResetEventSlim gate)
    {
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        // Posted from a pool thread: on the loop's own thread Execute would run it at once, blocking this test.
        await Task.Run(() => loop.Execute(_ =>
        {
            held.SetResult();
            gate.Wait(s_limit);
        }, null));
        await held.Task.WaitAsync(s_limit);
    }

    private static Socket Listen()
    {
        var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(8);
        return listener;
    }

    private static async Task<int> ReceiveAtLeastAsync(EpollSocket socket, byte[] buffer, int count)
    {
        var total = 0;
        while (total < count)
        {
            var read = await socket.ReceiveAsync(buffer.AsMemory(total)).AsTask().WaitAsync(s_limit);
            Assert.NotEqual(0, read);
            total += read;
        }

        return total;
    }

    private static async Task ReceiveExactlyAsync(Socket peer, byte[] buffer)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var read = await peer.ReceiveAsync(buffer.AsMemory(total)).AsTask().WaitAsync(s_limit);
            Assert.NotEqual(0, read);
            total += read;
        }
    }

    /// <summary>
    /// Leaves a fresh socket drained, so that the next read has to wait for the engine's next event: a read posted
    /// before the peer sends is completed by the event of that arrival, so no event the engine has not counted is
    /// left behind (such a stale event only makes the engine look at the socket once more, but a zero-byte read
    /// would then return at once).
    /// </summary>
    private static async Task DrainAsync(EpollSocket socket, Socket peer)
    {
        var reading = socket.ReceiveAsync(new byte[16]).AsTask();
        Assert.False(reading.IsCompleted); // nothing sent yet
        await peer.SendAsync("d"u8.ToArray());
        Assert.Equal(1, await reading.WaitAsync(s_limit));
    }

    private async Task<(EpollSocket Socket, Socket Peer)> PairAsync(Action<Socket>? configurePeer = null)
    {
        var (connecting, accepted) = await LoopbackSockets.ConnectPairAsync(configurePeer);
        _owned.Add(connecting);
        return (Own(new EpollSocket(accepted, _engine.NextLoop()), accepted), connecting);
    }

    private EpollSocket Own(EpollSocket socket, Socket underlying)
    {
        // The engine's socket disposes the .NET socket it took over; the second dispose finds it done.
        _owned.Add(new Disposer(socket.Dispose));
        _owned.Add(underlying);
        return socket;
    }

    private sealed class Disposer(Action dispose) : IDisposable
    {
        public void Dispose() => dispose();
    }

    /// <summary>Holds the loop inside its first readiness event until the gate opens.</summary>
    private sealed class BlockingListener(ManualResetEventSlim gate) : IReadinessListener
    {
        private readonly TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Entered => _entered.Task;

        public void OnReady(EpollSocket socket, bool readable, bool writable)
        {
            if (readable && _entered.TrySetResult())
            {
                gate.Wait(s_limit);
            }
        }
    }

    private sealed class Handler : IEpollHandler
    {
        public void OnEvents(uint events)
        {
        }
    }
}
