using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using ImapProxy.Connections.Transport.Epoll;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace ImapProxy.Tests.Connections.Transport;

/// <summary>Accepting on the epoll engine's threads, with real loopback sockets and two loops.</summary>
public sealed class EpollAcceptorTests : IDisposable
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);

    private readonly EpollEngine _engine = new(2, inlineContinuations: true, NullLogger.Instance);
    private readonly Socket _listening = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private readonly List<IDisposable> _sockets = [];
    private readonly Channel<(EpollSocket Socket, IPEndPoint Remote, EpollLoop Loop, EpollLoop? Current)> _accepted =
        Channel.CreateUnbounded<(EpollSocket, IPEndPoint, EpollLoop, EpollLoop?)>();
    private readonly Channel<SocketError> _failed = Channel.CreateUnbounded<SocketError>();
    private readonly List<EndPoint> _clients = [];

    public EpollAcceptorTests()
    {
        _listening.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listening.Listen(64);
    }

    public void Dispose()
    {
        _sockets.ForEach(s => s.Dispose());
        _listening.Dispose();
        _engine.Dispose();
    }

    [Fact]
    public async Task EachConnection_IsAcceptedOnce_OnTheThreadOfTheLoopThatTookIt_AndTheSessionsTakeTheLoopsInTurn()
    {
        using var acceptor = Start();
        Assert.True(acceptor.Registered);

        for (var i = 0; i < 20; i++)
        {
            await ConnectAsync();
        }

        var seen = new HashSet<EndPoint>();
        var sessionsPerLoop = new Dictionary<EpollLoop, int>();
        for (var i = 0; i < 20; i++)
        {
            var (socket, remote, loop, current) = await _accepted.Reader.ReadAsync().AsTask().WaitAsync(s_limit);
            _sockets.Add(socket);
            Assert.Same(loop, current);
            Assert.Contains(loop, _engine.Loops);
            Assert.True(seen.Add(remote));
            Assert.Contains(remote, _clients);
            Assert.Equal(_listening.LocalEndPoint, socket.LocalEndPoint());
            sessionsPerLoop[socket.Loop] = sessionsPerLoop.GetValueOrDefault(socket.Loop) + 1;
        }

        // Whichever loop woke, the sessions alternate (the exclusive wake-up alone would favour the first loop waiting).
        Assert.Equal([10, 10], _engine.Loops.Select(loop => sessionsPerLoop.GetValueOrDefault(loop)));

        Assert.False(_failed.Reader.TryRead(out _));
    }

    [Fact]
    public async Task LostRaces_DoNotSkewTheTurns()
    {
        // Under load a loop that was busy, not waiting, often finds the connection taken by the other loop already. Here
        // every other accept is made on a listening socket with nothing queued (a real EAGAIN), and the connection stays
        // queued and wakes a loop again (level-triggered). Sessions must still take the loops exactly in turn: a lost
        // race that used up a turn would shift the order (three loops, so no skew can hide in a whole cycle).
        using var engine = new EpollEngine(3, inlineContinuations: true, NullLogger.Instance);
        using var empty = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        empty.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        empty.Listen(1);
        empty.Blocking = false;
        var calls = 0;
        var lost = 0;
        using var acceptor = new EpollAcceptor(
            _listening,
            engine,
            (socket, remote, loop) => _accepted.Writer.TryWrite((socket, remote, loop, EpollLoop.Current)),
            error => _failed.Writer.TryWrite(error),
            accept: (out IPEndPoint? remote, out SocketError error) =>
            {
                if (Interlocked.Increment(ref calls) % 2 == 1)
                {
                    var none = EpollSocket.Accept(empty.SafeHandle, engine, out remote, out error);
                    Assert.Null(none);
                    Interlocked.Increment(ref lost);
                    return null;
                }

                return EpollSocket.Accept(_listening.SafeHandle, engine, out remote, out error);
            });

        for (var i = 0; i < 9; i++)
        {
            await ConnectAsync();
            var (socket, _, _, _) = await _accepted.Reader.ReadAsync().AsTask().WaitAsync(s_limit);
            _sockets.Add(socket);
            Assert.Same(engine.Loops[i % 3], socket.Loop);
        }

        Assert.True(Volatile.Read(ref lost) > 0); // the first look for each connection finds nothing, unless two loops raced
        Assert.False(_failed.Reader.TryRead(out _)); // a lost race is no failure
    }

    [Fact]
    public async Task RunningOutOfDescriptors_PausesAccepting_InsteadOfWakingWithoutEnd()
    {
        var time = new FakeTimeProvider();
        var calls = 0;
        using var acceptor = Start(time, (out IPEndPoint? remote, out SocketError error) =>
        {
            // The first accept fails as it does when the process has no descriptor left; the connection stays queued.
            if (Interlocked.Increment(ref calls) == 1)
            {
                remote = null;
                error = SocketError.TooManyOpenSockets;
                return null;
            }

            return EpollSocket.Accept(_listening.SafeHandle, _engine, out remote, out error);
        });
        await ConnectAsync();

        Assert.Equal(SocketError.TooManyOpenSockets, await _failed.Reader.ReadAsync().AsTask().WaitAsync(s_limit));

        // The failing loop pauses before it gets to its queued work. Level-triggered, the queued connection would wake
        // a loop again at once; paused, no loop looks at it.
        await DrainLoopsAsync();
        Assert.False(acceptor.Registered);
        Assert.Equal(1, Volatile.Read(ref calls));
        Assert.False(_accepted.Reader.TryRead(out _));

        time.Advance(EpollAcceptor.PauseOnExhaustion);

        var (socket, _, _, _) = await _accepted.Reader.ReadAsync().AsTask().WaitAsync(s_limit);
        _sockets.Add(socket);
        Assert.True(acceptor.Registered);

        // Back in both loops, both may look (the one too late finds nothing, which is no failure).
        await DrainLoopsAsync();
        Assert.InRange(Volatile.Read(ref calls), 2, 3);
        Assert.False(_accepted.Reader.TryRead(out _));
        Assert.False(_failed.Reader.TryRead(out _));
    }

    [Fact]
    public async Task Dispose_StopsAccepting_AndFreesEveryLoopsRegistration()
    {
        var before = _engine.Handlers.Count;
        var acceptor = Start();
        Assert.Equal(before + _engine.Loops.Count, _engine.Handlers.Count);

        acceptor.Dispose();

        Assert.False(acceptor.Registered);
        Assert.Equal(before, _engine.Handlers.Count);
        await ConnectAsync(); // queued by the kernel, taken by nobody
        await DrainLoopsAsync();
        Assert.False(_accepted.Reader.TryRead(out _));
    }

    private EpollAcceptor Start(TimeProvider? time = null, AcceptOne? accept = null) => new(
        _listening,
        _engine,
        (socket, remote, loop) => _accepted.Writer.TryWrite((socket, remote, loop, EpollLoop.Current)),
        error => _failed.Writer.TryWrite(error),
        time,
        accept);

    private async Task ConnectAsync()
    {
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _sockets.Add(client);
        await client.ConnectAsync(_listening.LocalEndPoint!).WaitAsync(s_limit);
        _clients.Add(client.LocalEndPoint!);
    }

    /// <summary>Until every loop has gone once round its events (work queued on it runs after them).</summary>
    private async Task DrainLoopsAsync()
    {
        for (var round = 0; round < 2; round++)
        {
            foreach (var loop in _engine.Loops)
            {
                var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                loop.Execute(static state => ((TaskCompletionSource)state!).SetResult(), done);
                await done.Task.WaitAsync(s_limit);
            }
        }
    }
}
