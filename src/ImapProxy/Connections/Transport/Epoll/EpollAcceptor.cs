using System.Net;
using System.Net.Sockets;

namespace ImapProxy.Connections.Transport.Epoll;

/// <summary>Accepts one connection onto the engine's next loop (see <see cref="EpollSocket.Accept"/>).</summary>
internal delegate EpollSocket? AcceptOne(out IPEndPoint? remote, out SocketError error);

/// <summary>
/// Accepts a listening socket's connections on the engine's own threads: the socket waits in every loop's epoll
/// (level-triggered, exclusive), and the loop that a new connection wakes accepts it there and hands it on, with no
/// thread of .NET's socket engine and no thread-pool hop in between.
/// </summary>
/// <remarks>
/// One connection per event, as nginx does by default: a loop takes one, serves its other events, and finds the
/// listening socket still readable on its next wait if more are queued, so a burst of connections never starves the
/// sessions on that thread. Accepting is one accept4 (non-blocking and close-on-exec from the start; no delay comes
/// from the listening socket, on which the constructor sets it), and gives an <see cref="EpollSocket"/> that owns its
/// descriptor, with no .NET socket object. A loop that finds the connection taken already (the exclusive wake-up still lets a loop that was busy, not waiting,
/// find the socket readable: up to 0.6 such accepts per connection measured under a login load) pays one system call
/// that says EAGAIN, and no exception (a .NET <see cref="Socket.Accept"/> threw one each time). Running out of
/// descriptors or buffers takes the socket out of every loop for <see cref="PauseOnExhaustion"/> instead of waking on
/// it without end.
/// </remarks>
internal sealed class EpollAcceptor : IEpollHandler, IDisposable
{
    /// <summary>How long accepting rests after the process ran out of descriptors or buffers.</summary>
    public static readonly TimeSpan PauseOnExhaustion = TimeSpan.FromMilliseconds(100);

    private readonly Socket _listening;
    private readonly EpollEngine _engine;
    private readonly Action<EpollSocket, IPEndPoint, EpollLoop> _accepted;
    private readonly Action<SocketError> _failed;
    private readonly TimeProvider _timeProvider;
    private readonly AcceptOne _accept;
    private readonly Lock _lock = new();
    private readonly ulong[] _tokens;
    private readonly int _fd;
    private bool _registered;
    private bool _disposed;
    private ITimer? _resume;

    /// <summary>
    /// Starts accepting on every loop of <paramref name="engine"/>. Each connection (its socket, registered on the
    /// engine's next loop in turn, and the client's address) goes to <paramref name="accepted"/> on the thread of the
    /// loop that took it, which must not block and owns the socket from then on; each failure but the client's own early leave goes to
    /// <paramref name="failed"/>, on the same thread. <paramref name="accept"/> stands in for
    /// <see cref="EpollSocket.Accept"/> in tests (failures no test can cause otherwise).
    /// </summary>
    public EpollAcceptor(
        Socket listening,
        EpollEngine engine,
        Action<EpollSocket, IPEndPoint, EpollLoop> accepted,
        Action<SocketError> failed,
        TimeProvider? timeProvider = null,
        AcceptOne? accept = null)
    {
        ArgumentNullException.ThrowIfNull(listening);
        ArgumentNullException.ThrowIfNull(engine);
        _listening = listening;
        _engine = engine;
        _accepted = accepted;
        _failed = failed;
        _timeProvider = timeProvider ?? TimeProvider.System;
        _accept = accept ?? AcceptFromListening;
        _tokens = new ulong[engine.Loops.Count];
        listening.Blocking = false; // accept4 tries once and says EAGAIN instead of waiting
        listening.NoDelay = true; // inherited by every accepted socket: no setsockopt per connection
        _fd = (int)listening.SafeHandle.DangerousGetHandle();
        lock (_lock)
        {
            Register();
        }
    }

    /// <summary>Whether the socket is in the loops' epoll now (false while paused, and once disposed).</summary>
    internal bool Registered
    {
        get
        {
            lock (_lock)
            {
                return _registered;
            }
        }
    }

    void IEpollHandler.OnEvents(uint events)
    {
        // The session goes to the next loop in turn, not to the one that woke: with EPOLLEXCLUSIVE the kernel wakes the
        // first loop waiting, so at a low connection rate one thread would take nearly every session for its life.
        if (_accept(out var remote, out var error) is { } accepted)
        {
            _accepted(accepted, remote!, EpollLoop.Current!);
            return;
        }

        if (error is SocketError.WouldBlock or SocketError.ConnectionReset or SocketError.ConnectionAborted or SocketError.OperationAborted)
        {
            return; // another loop took it, the client left before it was accepted, or unbound under the event
        }

        _failed(error);
        if (error is SocketError.TooManyOpenSockets or SocketError.NoBufferSpaceAvailable)
        {
            Pause();
        }
    }

    private EpollSocket? AcceptFromListening(out IPEndPoint? remote, out SocketError error) =>
        EpollSocket.Accept(_listening.SafeHandle, _engine, out remote, out error);

    /// <summary>Stops accepting; the listening socket itself is its owner's to close.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            _resume?.Dispose();
            Unregister();
        }
    }

    private void Pause()
    {
        lock (_lock)
        {
            if (_disposed || !_registered)
            {
                return;
            }

            Unregister();
            _resume ??= _timeProvider.CreateTimer(static state => ((EpollAcceptor)state!).Resume(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            _resume.Change(PauseOnExhaustion, Timeout.InfiniteTimeSpan);
        }
    }

    private void Resume()
    {
        lock (_lock)
        {
            if (!_disposed && !_registered)
            {
                try
                {
                    Register();
                }
                catch (SocketException ex) when (ex.SocketErrorCode != SocketError.Shutdown) // Shutdown: the engine has stopped
                {
                    // Still no room (epoll_ctl needs memory too): try again later.
                    _failed(ex.SocketErrorCode);
                    _resume!.Change(PauseOnExhaustion, Timeout.InfiniteTimeSpan);
                }
                catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
                {
                    // The engine has stopped, or the socket was closed without disposing this first: nothing to resume.
                }
            }
        }
    }

    /// <summary>Under the lock. All or nothing: a loop that refuses undoes the others.</summary>
    private void Register()
    {
        var loops = _engine.Loops;
        var added = false;
        _listening.SafeHandle.DangerousAddRef(ref added);
        try
        {
            for (var i = 0; i < loops.Count; i++)
            {
                try
                {
                    _tokens[i] = loops[i].AddListening(_fd, this);
                }
                catch
                {
                    for (var j = 0; j < i; j++)
                    {
                        loops[j].RemoveListening(_fd, _tokens[j]);
                    }

                    throw;
                }
            }

            _registered = true;
        }
        finally
        {
            if (added)
            {
                _listening.SafeHandle.DangerousRelease();
            }
        }
    }

    /// <summary>Under the lock.</summary>
    private void Unregister()
    {
        if (!_registered)
        {
            return;
        }

        _registered = false;
        var added = false;
        try
        {
            _listening.SafeHandle.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
            // Closed already: that took it out of every epoll; only the handler slots are left.
        }

        try
        {
            var loops = _engine.Loops;
            for (var i = 0; i < loops.Count; i++)
            {
                if (added)
                {
                    loops[i].RemoveListening(_fd, _tokens[i]);
                }
                else
                {
                    loops[i].Remove(_tokens[i]);
                }
            }
        }
        finally
        {
            if (added)
            {
                _listening.SafeHandle.DangerousRelease();
            }
        }
    }
}
