using System.Net.Sockets;

namespace ImapProxy.Connections.Transport.Epoll;

/// <summary>
/// Accepts a listening socket's connections on the engine's own threads: the socket waits in every loop's epoll
/// (level-triggered, exclusive), and the loop that a new connection wakes accepts it there and hands it on, with no
/// thread of .NET's socket engine and no thread-pool hop in between.
/// </summary>
/// <remarks>
/// One connection per event, as nginx does by default: a loop takes one, serves its other events, and finds the
/// listening socket still readable on its next wait if more are queued, so a burst of connections never starves the
/// sessions on that thread. Accepting goes through <see cref="Socket.Accept"/> on the socket made non-blocking,
/// which makes one accept4 and builds the accepted <see cref="Socket"/> from what it already knows (building one
/// from a bare descriptor would cost seven more system calls). Its failure when another loop took the connection
/// first (EAGAIN) is an exception, which the exclusive wake-up makes rare. Running out of descriptors or buffers
/// takes the socket out of every loop for <see cref="PauseOnExhaustion"/> instead of waking on it without end.
/// </remarks>
internal sealed class EpollAcceptor : IEpollHandler, IDisposable
{
    /// <summary>How long accepting rests after the process ran out of descriptors or buffers.</summary>
    public static readonly TimeSpan PauseOnExhaustion = TimeSpan.FromMilliseconds(100);

    private readonly Socket _listening;
    private readonly EpollEngine _engine;
    private readonly Action<Socket, EpollLoop> _accepted;
    private readonly Action<SocketError> _failed;
    private readonly TimeProvider _timeProvider;
    private readonly Func<Socket, Socket> _accept;
    private readonly Lock _lock = new();
    private readonly ulong[] _tokens;
    private readonly int _fd;
    private bool _registered;
    private bool _disposed;
    private ITimer? _resume;

    /// <summary>
    /// Starts accepting on every loop of <paramref name="engine"/>. Each connection goes to
    /// <paramref name="accepted"/> on the thread of the loop that took it (which must not block); each failure but the
    /// client's own early leave goes to <paramref name="failed"/>, on the same thread. <paramref name="accept"/> stands
    /// in for <see cref="Socket.Accept"/> in tests (failures no test can cause otherwise).
    /// </summary>
    public EpollAcceptor(
        Socket listening,
        EpollEngine engine,
        Action<Socket, EpollLoop> accepted,
        Action<SocketError> failed,
        TimeProvider? timeProvider = null,
        Func<Socket, Socket>? accept = null)
    {
        ArgumentNullException.ThrowIfNull(listening);
        ArgumentNullException.ThrowIfNull(engine);
        _listening = listening;
        _engine = engine;
        _accepted = accepted;
        _failed = failed;
        _timeProvider = timeProvider ?? TimeProvider.System;
        _accept = accept ?? (static socket => socket.Accept());
        _tokens = new ulong[engine.Loops.Count];
        listening.Blocking = false; // Accept tries once and says WouldBlock instead of waiting
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
        Socket accepted;
        try
        {
            accepted = _accept(_listening);
        }
        catch (SocketException ex) when (ex.SocketErrorCode is SocketError.WouldBlock or SocketError.ConnectionReset or SocketError.ConnectionAborted)
        {
            return; // another loop took it, or the client left before it was accepted
        }
        catch (ObjectDisposedException)
        {
            return; // unbound under the event
        }
        catch (SocketException ex)
        {
            _failed(ex.SocketErrorCode);
            if (ex.SocketErrorCode is SocketError.TooManyOpenSockets or SocketError.NoBufferSpaceAvailable)
            {
                Pause();
            }

            return;
        }

        _accepted(accepted, EpollLoop.Current!);
    }

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
