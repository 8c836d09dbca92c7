using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;

namespace ImapProxy.Connections.Transport.Epoll;

/// <summary>Takes a socket's readiness events instead of its waiting operations (<see cref="EpollSocket.SetListener"/>).</summary>
internal interface IReadinessListener
{
    /// <summary>On the socket's loop thread: <paramref name="socket"/> may have become readable or writable.</summary>
    void OnReady(EpollSocket socket, bool readable, bool writable);
}

/// <summary>
/// A non-blocking socket on an <see cref="EpollLoop"/>: one read and one write at a time, each completing at once
/// when the socket is ready and otherwise waiting for the loop's next event for it.
/// </summary>
/// <remarks>
/// Readiness is tracked per direction with a counter of the loop's events (edge-triggered epoll reports each new
/// arrival once). A receive that comes back short, or with EAGAIN, marks the socket drained as of the count it saw
/// before trying; the next read tries the socket only once the count has moved, so a read posted on a drained
/// socket costs no system call. A fresh socket counts as drained: adding it to epoll reports what arrived before
/// (data or the end), so its first read waits for that event instead of trying a receive that would nearly always
/// find nothing (a client speaks after the proxy's greeting, a backend once connected). A waiting operation is
/// published with a full fence and the count re-checked, and the loop bumps the count with a full fence before it
/// looks for a waiter: one of the two always sees the other.
/// (TCP urgent data also makes a receive stop short; a peer that sends it stalls its own session until it sends
/// again, as with nginx. IMAP has no use for it.)
/// <para>
/// The socket owns its descriptor, with no <see cref="System.Net.Sockets.Socket"/> object (about 0.5 KB with its handle and
/// state, per socket): the engine accepts and creates sockets itself (<see cref="Accept"/>, <see cref="ConnectAsync"/>).
/// A .NET socket can be taken over too, and is then disposed with this one. The descriptor is used only under a
/// reference on its handle, so that a concurrent dispose cannot close it (and let the number be reused) during a
/// system call.
/// </para>
/// </remarks>
internal sealed class EpollSocket : IEpollHandler, IDisposable
{
    private const uint ReadEvents = LibC.EpollIn | LibC.EpollRdHup | LibC.EpollHup | LibC.EpollErr;
    private const uint WriteEvents = LibC.EpollOut | LibC.EpollHup | LibC.EpollErr;
    private const uint EndEvents = LibC.EpollRdHup | LibC.EpollHup | LibC.EpollErr;

    /// <summary>Reads in a row that complete at once on the loop thread before one yields to the loop's other events.</summary>
    internal const int MaxReadsInARow = 32;

    // What a published waiter is waiting for.
    private const int NotWaiting = 0;
    private const int WaitingToReceive = 1;
    private const int WaitingForPeek = 2; // the peer-close watch: data (1) or the end (0), nothing consumed
    private const int WaitingToSend = 1;
    private const int WaitingToConnect = 2;

    private readonly SafeHandle _handle;
    private readonly Socket? _adopted; // a .NET socket taken over, kept from its finalizer (which would close the descriptor)
    private readonly int _fd;
    private ulong _token;
    private bool _registered;
    private int _disposed;
    private IReadinessListener? _listener;

    private int _readEvents;
    private int _readDrainedAt; // a fresh socket waits for its first event: registering reports what is there already
    private volatile bool _readEnded; // the peer's close or an error was reported: reads never wait again
    private int _readWaiting;
    private int _readsInARow; // completed at once on the loop thread, since a read last waited or yielded
    private ReadOperation? _read; // created by the first read, dropped when a listener takes the events

    private int _writeEvents;
    private int _writeWaiting;
    private bool _writesWatched; // registered for writing too: from the first write that had to wait (or the connect)
    private WriteOperation? _write;

    /// <summary>
    /// Takes over a .NET socket, connected or accepted: non-blocking, registered on <paramref name="loop"/>, disposed
    /// with this one.
    /// </summary>
    public EpollSocket(Socket socket, EpollLoop loop)
    {
        ArgumentNullException.ThrowIfNull(socket);
        ArgumentNullException.ThrowIfNull(loop);
        Loop = loop;
        _adopted = socket;
        _handle = socket.SafeHandle;
        _fd = (int)_handle.DangerousGetHandle();
        if (socket.Blocking)
        {
            SetNonBlocking(_fd);
        }

        Register(writes: false);
    }

    /// <summary>A descriptor of the engine's own, non-blocking already; registered when <paramref name="register"/>.</summary>
    private EpollSocket(Descriptor descriptor, EpollLoop loop, bool register)
    {
        Loop = loop;
        _handle = descriptor;
        _fd = descriptor.Fd;
        if (register)
        {
            Register(writes: false);
        }
    }

    public EpollLoop Loop { get; }

    /// <summary>
    /// Accepts one connection from the listening socket <paramref name="listening"/> (non-blocking), registered on the
    /// next loop of <paramref name="engine"/> in turn (from any thread): the socket and the client's address, or null
    /// and why (WouldBlock when none is queued, or another loop took it). Nothing throws: a loop that lost the race for a
    /// connection pays one system call. The loop is picked only once there is a connection, so lost races do not skew
    /// the turns (with two loops, every loss would otherwise push the next session back onto the same loop).
    /// The connection has no delay (TCP_NODELAY) when the listening socket has it: Linux copies the option into every
    /// socket it accepts, so <see cref="EpollAcceptor"/> sets it once there instead of once per connection.
    /// </summary>
    internal static unsafe EpollSocket? Accept(SafeHandle listening, EpollEngine engine, out IPEndPoint? remote, out SocketError error)
    {
        var address = stackalloc byte[SocketAddresses.MaxSize];
        var length = (uint)SocketAddresses.MaxSize;
        int fd;
        var errno = 0;
        var added = false;
        try
        {
            listening.DangerousAddRef(ref added);
            do
            {
                fd = LibC.Accept4((int)listening.DangerousGetHandle(), address, &length, LibC.SockNonblock | LibC.SockCloexec);
                errno = fd < 0 ? Marshal.GetLastPInvokeError() : 0; // before the release, which may close (another call)
            }
            while (errno == LibC.EIntr);
        }
        catch (ObjectDisposedException)
        {
            remote = null;
            error = SocketError.OperationAborted; // unbound under the event
            return null;
        }
        finally
        {
            if (added)
            {
                listening.DangerousRelease();
            }
        }

        if (fd < 0)
        {
            remote = null;
            error = LibC.ToSocketError(errno);
            return null;
        }

        var descriptor = new Descriptor(fd);
        try
        {
            remote = SocketAddresses.ToEndPoint(new ReadOnlySpan<byte>(address, (int)Math.Min(length, (uint)SocketAddresses.MaxSize)));
            error = SocketError.Success;
            return new EpollSocket(descriptor, engine.NextLoop(), register: true);
        }
        catch (SocketException ex)
        {
            error = ex.SocketErrorCode;
        }
        catch
        {
            descriptor.Dispose();
            throw;
        }

        descriptor.Dispose();
        remote = null;
        return null;
    }

    /// <summary>The socket's own address (getsockname).</summary>
    public unsafe IPEndPoint LocalEndPoint()
    {
        var address = stackalloc byte[SocketAddresses.MaxSize];
        var length = (uint)SocketAddresses.MaxSize;
        var added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            if (LibC.GetSockName(_fd, address, &length) != 0)
            {
                throw new SocketException((int)LibC.ToSocketError(Marshal.GetLastPInvokeError()));
            }
        }
        finally
        {
            if (added)
            {
                _handle.DangerousRelease();
            }
        }

        return SocketAddresses.ToEndPoint(new ReadOnlySpan<byte>(address, (int)Math.Min(length, (uint)SocketAddresses.MaxSize)));
    }

    /// <summary>Whether the socket sends without delay (TCP_NODELAY), as every socket of the engine does.</summary>
    internal unsafe bool NoDelay
    {
        get
        {
            int value;
            var length = (uint)sizeof(int);
            var added = false;
            try
            {
                _handle.DangerousAddRef(ref added);
                if (LibC.GetSockOpt(_fd, LibC.IpProtoTcp, LibC.TcpNoDelay, &value, &length) != 0)
                {
                    throw new SocketException((int)LibC.ToSocketError(Marshal.GetLastPInvokeError()));
                }
            }
            finally
            {
                if (added)
                {
                    _handle.DangerousRelease();
                }
            }

            return value != 0;
        }
    }

    /// <summary>Shuts a direction down; a socket already closed, reset or disposed needs nothing more (never throws).</summary>
    public void Shutdown(SocketShutdown how)
    {
        var added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            _ = LibC.Shutdown(_fd, how switch
            {
                SocketShutdown.Receive => LibC.ShutRd,
                SocketShutdown.Send => LibC.ShutWr,
                _ => LibC.ShutRdWr,
            });
        }
        catch (ObjectDisposedException)
        {
            // Closed already.
        }
        finally
        {
            if (added)
            {
                _handle.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Connects a new socket to <paramref name="endpoint"/> on <paramref name="loop"/>. Failures are
    /// <see cref="SocketException"/>s; a cancelled connect is an <see cref="OperationCanceledException"/>.
    /// </summary>
    public static async ValueTask<EpollSocket> ConnectAsync(EpollLoop loop, IPEndPoint endpoint, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var connecting = BeginConnect(loop, endpoint, listener: null, out var address, out var error);
        try
        {
            var seen = 0; // no event is counted before the registration
            while (error is SocketError.InProgress or SocketError.AlreadyInProgress)
            {
                await connecting.WaitWritableAsync(seen, cancellationToken);

                // The count is read before each look, so a completion in between is not missed; connect(2) again
                // says EALREADY while under way, EISCONN once connected, or why it failed.
                seen = Volatile.Read(ref connecting._writeEvents);
                error = connecting.StartConnect(address);
            }

            if (error is not (SocketError.Success or SocketError.IsConnected))
            {
                throw new SocketException((int)error);
            }

            return connecting;
        }
        catch
        {
            connecting.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A new socket on <paramref name="loop"/>, connecting to <paramref name="endpoint"/>, with how far the connect got
    /// (<see cref="ContinueConnect"/> asks again once the socket is writable). With a <paramref name="listener"/> (only
    /// on the loop's thread) its events go to the listener from the start. Failures to create the socket are
    /// <see cref="SocketException"/>s; a connect refused at once is <paramref name="error"/>.
    /// </summary>
    internal static EpollSocket BeginConnect(EpollLoop loop, IPEndPoint endpoint, IReadinessListener? listener, out SocketAddress address, out SocketError error)
    {
        System.Diagnostics.Debug.Assert(listener is null || loop.IsCurrent, "listeners are set on the loop thread");
        var fd = LibC.Socket(SocketAddresses.Family(endpoint.AddressFamily), LibC.SockStream | LibC.SockNonblock | LibC.SockCloexec, LibC.IpProtoTcp);
        if (fd < 0)
        {
            throw new SocketException((int)LibC.ToSocketError(Marshal.GetLastPInvokeError()));
        }

        var descriptor = new Descriptor(fd);
        EpollSocket? connecting = null;
        try
        {
            if (SetNoDelay(fd) is not SocketError.Success and var failed)
            {
                throw new SocketException((int)failed);
            }

            connecting = new EpollSocket(descriptor, loop, register: false) { _listener = listener };
            address = endpoint.Serialize(); // the platform's sockaddr layout
            error = connecting.StartConnect(address);

            // Registered only once the connect is under way: a socket that is not connecting yet reports itself hung
            // up, which would read as the end of the stream. A connect that finished already reports its outcome.
            connecting.Register(writes: true);
            return connecting;
        }
        catch
        {
            connecting?.Dispose();
            descriptor.Dispose();
            throw;
        }
    }

    /// <summary>
    /// connect(2) again for a socket of <see cref="BeginConnect"/>: AlreadyInProgress while under way, IsConnected once
    /// done, or why it failed.
    /// </summary>
    internal SocketError ContinueConnect(SocketAddress address) => StartConnect(address);

    /// <summary>
    /// Receives into <paramref name="buffer"/>: the count, 0 at the end of the stream. An empty buffer waits, taking
    /// nothing, until there is something to read (bytes, the end, or an error the next read reports): callers then
    /// take a buffer, and none is held while a connection idles. Failures are <see cref="SocketException"/>s.
    /// </summary>
    public ValueTask<int> ReceiveAsync(Memory<byte> buffer)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        while (true)
        {
            var seen = Volatile.Read(ref _readEvents);
            if (seen != _readDrainedAt)
            {
                if (Loop.IsCurrent && ++_readsInARow > MaxReadsInARow)
                {
                    return YieldRead(buffer);
                }

                if (buffer.IsEmpty)
                {
                    // Looked at, not assumed: a caller woken for nothing would take a buffer and hold it in a read
                    // for as long as the session idles (an event counted after the bytes it announced were read
                    // leaves the socket looking readable).
                    if (Peek(seen, out var peekError) >= 0 || peekError != SocketError.WouldBlock)
                    {
                        return new ValueTask<int>(0); // data, the end, or an error the next read reports
                    }
                }
                else
                {
                    var received = Receive(buffer.Span, 0, seen, out var error);
                    if (received >= 0)
                    {
                        return new ValueTask<int>(received);
                    }

                    if (error != SocketError.WouldBlock)
                    {
                        return ValueTask.FromException<int>(new SocketException((int)error));
                    }
                }
            }

            var read = _read ??= new ReadOperation(!Loop.InlineContinuations);
            read.Buffer = buffer;
            read.Core.Reset();
            if (PublishRead(WaitingToReceive, seen))
            {
                _readsInARow = 0;
                return new ValueTask<int>(read, read.Core.Version);
            }

            read.Buffer = default;
        }
    }

    /// <summary>
    /// A read that could complete at once, made to wait for the loop's next round of events instead: a peer that
    /// sends faster than its session consumes would otherwise keep the session's inline continuations running on the
    /// loop thread, one read after another, and every other session on that thread would wait.
    /// </summary>
    private ValueTask<int> YieldRead(Memory<byte> buffer)
    {
        _readsInARow = 0;
        var read = _read ??= new ReadOperation(!Loop.InlineContinuations);
        read.Buffer = buffer;
        read.Core.Reset();
        Interlocked.Exchange(ref _readWaiting, WaitingToReceive);
        try
        {
            Loop.Post(static state => ((EpollSocket)state!).ResumeYieldedRead(), this);
        }
        catch (SocketException ex)
        {
            // The engine is stopping: the read fails, unless an event or the dispose took it already (and ends it).
            if (Interlocked.Exchange(ref _readWaiting, NotWaiting) != NotWaiting)
            {
                read.Buffer = default;
                return ValueTask.FromException<int>(ex);
            }
        }

        return new ValueTask<int>(read, read.Core.Version);
    }

    /// <summary>
    /// On the loop thread: goes on with a yielded read, unless an event or the dispose took it first (then this may
    /// find a later read waiting, which it tries once more and leaves waiting).
    /// </summary>
    private void ResumeYieldedRead()
    {
        var waiting = Interlocked.Exchange(ref _readWaiting, NotWaiting);
        if (waiting != NotWaiting)
        {
            ContinueRead(waiting);
        }
    }

    /// <summary>
    /// Waits until the peer closes (true) or has sent something (false), consuming nothing. Cancelling ends the
    /// wait only; the socket stays usable.
    /// </summary>
    public async Task<bool> WaitForPeerCloseAsync(CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        while (true)
        {
            var seen = Volatile.Read(ref _readEvents);
            if (seen != _readDrainedAt)
            {
                var peeked = Peek(seen, out var error);
                if (peeked >= 0 || error != SocketError.WouldBlock)
                {
                    return peeked <= 0; // the end, or a reset
                }
            }

            var read = _read ??= new ReadOperation(!Loop.InlineContinuations);
            read.Core.Reset();
            read.CancelToken = cancellationToken;
            read.Cancellation = cancellationToken.UnsafeRegister(static state => ((EpollSocket)state!).CancelRead(), this);
            if (PublishRead(WaitingForPeek, seen))
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    CancelRead(); // cancelled before the waiter was there to be cancelled
                }

                return await new ValueTask<int>(read, read.Core.Version) == 0;
            }

            read.Cancellation.Dispose();
            read.Cancellation = default;
            read.CancelToken = default;
        }
    }

    /// <summary>Sends all of <paramref name="buffer"/>, waiting for room as needed. Failures are <see cref="SocketException"/>s.</summary>
    public ValueTask SendAsync(ReadOnlyMemory<byte> buffer)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        while (true)
        {
            var seen = Volatile.Read(ref _writeEvents);
            var sent = Send(buffer.Span, out var error);
            if (sent == buffer.Length)
            {
                return ValueTask.CompletedTask;
            }

            if (sent < 0 && error != SocketError.WouldBlock)
            {
                return ValueTask.FromException(new SocketException((int)error));
            }

            buffer = buffer[Math.Max(sent, 0)..];
            if (WatchWrites() is not SocketError.Success and var failed)
            {
                return ValueTask.FromException(new SocketException((int)failed));
            }

            var write = _write ??= new WriteOperation(!Loop.InlineContinuations);
            write.Buffer = buffer;
            write.Core.Reset();
            if (PublishWrite(WaitingToSend, seen))
            {
                return new ValueTask(write, write.Core.Version);
            }

            write.Buffer = default;
        }
    }

    /// <summary>
    /// For a <see cref="IReadinessListener"/> on the loop thread: receives what is there without waiting. Returns the
    /// count (0 at the end of the stream), or -1 with <paramref name="error"/> (WouldBlock: nothing there now).
    /// </summary>
    public int TryReceive(Span<byte> buffer, out SocketError error)
    {
        var seen = Volatile.Read(ref _readEvents);
        if (seen == _readDrainedAt)
        {
            error = SocketError.WouldBlock;
            return -1;
        }

        return Receive(buffer, 0, seen, out error);
    }

    /// <summary>
    /// For a <see cref="IReadinessListener"/> on the loop thread: sends what the socket takes now. Returns the count
    /// taken (possibly short; the listener hears when there is room again), or -1 with <paramref name="error"/>.
    /// </summary>
    public int TrySend(ReadOnlySpan<byte> buffer, out SocketError error)
    {
        var sent = Send(buffer, out error);
        if (sent < 0 && error == SocketError.WouldBlock)
        {
            sent = 0;
        }
        else if (sent < 0 || sent == buffer.Length)
        {
            return sent;
        }

        // Short: the listener waits for room, which the socket now reports.
        error = WatchWrites();
        return error == SocketError.Success ? sent : -1;
    }

    /// <summary>
    /// From now on (null: no longer) the socket's events go to <paramref name="listener"/> instead of waiting
    /// operations, whose state is let go of until the next one. Only on the loop thread, with no operation waiting.
    /// </summary>
    public void SetListener(IReadinessListener? listener)
    {
        System.Diagnostics.Debug.Assert(Loop.IsCurrent, "listeners are set on the loop thread");
        _listener = listener;
        if (listener is not null)
        {
            // A completed operation's awaiter holds its own reference until it has taken the result. Kept while one
            // waits (which the caller must not let happen): the dispose still needs it to fail that operation.
            if (Volatile.Read(ref _readWaiting) == NotWaiting)
            {
                _read = null;
            }

            if (Volatile.Read(ref _writeWaiting) == NotWaiting)
            {
                _write = null;
            }
        }
    }

    void IEpollHandler.OnEvents(uint events)
    {
        if (Volatile.Read(ref _disposed) != 0)
        {
            return;
        }

        var readable = (events & ReadEvents) != 0;
        var writable = (events & WriteEvents) != 0;

        // Full fences: each pairs with the fence that publishes a waiter (PublishRead, PublishWrite).
        if ((events & EndEvents) != 0)
        {
            // Before the count moves: a reader that sees the new count sees this too.
            _readEnded = true;
        }

        if (readable)
        {
            Interlocked.Increment(ref _readEvents);
        }

        if (writable)
        {
            Interlocked.Increment(ref _writeEvents);
        }

        if (_listener is { } listener)
        {
            listener.OnReady(this, readable, writable);
            return;
        }

        if (readable && Volatile.Read(ref _readWaiting) != NotWaiting)
        {
            var waiting = Interlocked.Exchange(ref _readWaiting, NotWaiting);
            if (waiting != NotWaiting)
            {
                ContinueRead(waiting);
            }
        }

        if (writable && Volatile.Read(ref _writeWaiting) != NotWaiting)
        {
            var waiting = Interlocked.Exchange(ref _writeWaiting, NotWaiting);
            if (waiting != NotWaiting)
            {
                ContinueWrite(waiting);
            }
        }
    }

    /// <summary>
    /// Stops the socket's events, fails an operation still waiting and closes the socket (which takes it out of epoll;
    /// an operation under way keeps the descriptor open until its system call returns).
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        if (_registered)
        {
            Loop.Remove(_token);
        }

        if (Interlocked.Exchange(ref _readWaiting, NotWaiting) != NotWaiting)
        {
            _read!.Buffer = default;
            _read.Core.SetException(new ObjectDisposedException(nameof(EpollSocket)));
        }

        if (Interlocked.Exchange(ref _writeWaiting, NotWaiting) != NotWaiting)
        {
            _write!.Buffer = default;
            _write.Core.SetException(new ObjectDisposedException(nameof(EpollSocket)));
        }

        if (_adopted is not null)
        {
            _adopted.Dispose();
        }
        else
        {
            _handle.Dispose();
        }
    }

    private void Register(bool writes)
    {
        _token = Loop.Add(_fd, this, writes);
        _registered = true;
        _writesWatched = writes;
    }

    /// <summary>
    /// Before a write waits for room: from now on the socket is watched for writing (see <see cref="EpollLoop.Add"/>),
    /// and reported at once if it has room by now. Success, or why the registration could not be changed.
    /// </summary>
    private SocketError WatchWrites()
    {
        if (_writesWatched)
        {
            return SocketError.Success;
        }

        var added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            var errno = Loop.WatchWrites(_fd, _token);
            if (errno != 0)
            {
                return LibC.ToSocketError(errno);
            }

            _writesWatched = true;
            return SocketError.Success;
        }
        finally
        {
            if (added)
            {
                _handle.DangerousRelease();
            }
        }
    }

    private static unsafe SocketError SetNoDelay(int fd)
    {
        var on = 1;
        return LibC.SetSockOpt(fd, LibC.IpProtoTcp, LibC.TcpNoDelay, &on, sizeof(int)) == 0
            ? SocketError.Success
            : LibC.ToSocketError(Marshal.GetLastPInvokeError());
    }

    /// <summary>One ioctl (FIONBIO) rather than fcntl's read and write of the flags: two system calls less per session.</summary>
    private static unsafe void SetNonBlocking(int fd)
    {
        var on = 1;
        if (LibC.Ioctl(fd, LibC.FionBio, &on) < 0)
        {
            throw new SocketException((int)LibC.ToSocketError(Marshal.GetLastPInvokeError()));
        }
    }

    /// <summary>Publishes a waiting read; false if an event came since <paramref name="seen"/> (try again instead).</summary>
    private bool PublishRead(int waiting, int seen) => Publish(ref _readWaiting, waiting, ref _readEvents, seen);

    private bool PublishWrite(int waiting, int seen) => Publish(ref _writeWaiting, waiting, ref _writeEvents, seen);

    /// <summary>
    /// Publishes a waiter; false if an event came since <paramref name="seen"/> and the caller took the waiter back
    /// (it tries the socket again itself). A socket disposed meanwhile throws, unless the dispose failed the waiter.
    /// </summary>
    private bool Publish(ref int waiter, int waiting, ref int events, int seen)
    {
        Interlocked.Exchange(ref waiter, waiting);
        if (Volatile.Read(ref events) == seen && Volatile.Read(ref _disposed) == 0)
        {
            return true;
        }

        // Taken back, unless the loop (or the dispose) took it first: then that completes it.
        if (Interlocked.Exchange(ref waiter, NotWaiting) == NotWaiting)
        {
            return true;
        }

        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        return false;
    }

    /// <summary>
    /// On the loop thread: a waiting read may proceed. The operation is completed outside the try (its continuation
    /// may run inline and start the next read, which a failure handled here must not touch).
    /// </summary>
    private void ContinueRead(int waiting)
    {
        int result;
        bool done;
        Exception? failure = null;
        try
        {
            done = TryRead(waiting, out result, out var error);
            if (done && result < 0)
            {
                failure = new SocketException((int)error);
            }
        }
        catch (Exception ex)
        {
            done = true;
            result = -1;
            failure = ex;
        }

        if (!done)
        {
            // Waiting again. A cancellation while this thread held the waiter found nothing to cancel; it is looked
            // at again now that the waiter is back (the publish's full fence pairs with the token's).
            if (waiting == WaitingForPeek && _read!.CancelToken.IsCancellationRequested)
            {
                CancelRead();
            }

            return;
        }

        var read = _read!;
        read.Buffer = default;
        if (failure is null)
        {
            read.Core.SetResult(result);
        }
        else
        {
            read.Core.SetException(failure);
        }
    }

    /// <summary>
    /// ContinueRead's attempts: false once the waiter is published again (an event for bytes an earlier read took),
    /// else the result to complete with (-1 with the error of a failed receive).
    /// </summary>
    private bool TryRead(int waiting, out int result, out SocketError error)
    {
        while (true)
        {
            // A zero-byte read is a peek too: the event may announce bytes an earlier read took already.
            var peek = waiting == WaitingForPeek || _read!.Buffer.IsEmpty;
            var seen = Volatile.Read(ref _readEvents);
            result = peek ? Peek(seen, out error) : Receive(_read!.Buffer.Span, 0, seen, out error);
            if (result >= 0 || error != SocketError.WouldBlock)
            {
                if (peek)
                {
                    // The watch: 1 for data, 0 for the end or a failure (the connection is gone). A zero-byte read:
                    // 0 in every case (the next read reports an error).
                    result = waiting == WaitingForPeek ? Math.Max(result, 0) : 0;
                }

                return true;
            }

            if (PublishRead(waiting, seen))
            {
                return false;
            }
        }
    }

    /// <summary>On the loop thread: a waiting write (or connect) may proceed; completed outside the try, as reads are.</summary>
    private void ContinueWrite(int waiting)
    {
        Exception? failure = null;
        try
        {
            if (waiting != WaitingToConnect && !TryWrite(out failure))
            {
                return; // waiting again
            }
        }
        catch (Exception ex)
        {
            failure = ex;
        }

        var write = _write!;
        write.Buffer = default;
        if (failure is null)
        {
            write.Core.SetResult(0);
        }
        else
        {
            write.Core.SetException(failure);
        }
    }

    /// <summary>ContinueWrite's attempts: false once the waiter is published again, else done (with the failure, if any).</summary>
    private bool TryWrite(out Exception? failure)
    {
        while (true)
        {
            var write = _write!;
            var seen = Volatile.Read(ref _writeEvents);
            var sent = Send(write.Buffer.Span, out var error);
            if (sent == write.Buffer.Length)
            {
                failure = null;
                return true;
            }

            if (sent < 0 && error != SocketError.WouldBlock)
            {
                failure = new SocketException((int)error);
                return true;
            }

            write.Buffer = write.Buffer[Math.Max(sent, 0)..];
            if (WatchWrites() is not SocketError.Success and var failed)
            {
                failure = new SocketException((int)failed);
                return true;
            }

            if (PublishWrite(WaitingToSend, seen))
            {
                failure = null;
                return false;
            }
        }
    }

    /// <summary>Until the loop reports the socket writable after <paramref name="seen"/> (or at once if it already has).</summary>
    private ValueTask WaitWritableAsync(int seen, CancellationToken cancellationToken)
    {
        var write = _write ??= new WriteOperation(!Loop.InlineContinuations);
        write.Core.Reset();
        write.Cancellation = cancellationToken.UnsafeRegister(static state => ((EpollSocket)state!).CancelWrite(), this);
        if (PublishWrite(WaitingToConnect, seen))
        {
            if (cancellationToken.IsCancellationRequested)
            {
                CancelWrite();
            }

            return new ValueTask(write, write.Core.Version);
        }

        write.Cancellation.Dispose();
        write.Cancellation = default;
        return ValueTask.CompletedTask;
    }

    private void CancelRead()
    {
        if (Interlocked.CompareExchange(ref _readWaiting, NotWaiting, WaitingForPeek) == WaitingForPeek)
        {
            _read!.Core.SetException(new OperationCanceledException());
        }
    }

    private void CancelWrite()
    {
        if (Interlocked.CompareExchange(ref _writeWaiting, NotWaiting, WaitingToConnect) == WaitingToConnect)
        {
            _write!.Core.SetException(new OperationCanceledException());
        }
    }

    /// <summary>One recv: the count, or -1 with the error; marks the socket drained as of <paramref name="seen"/> when it is.</summary>
    private unsafe int Receive(Span<byte> buffer, int flags, int seen, out SocketError error)
    {
        var added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            nint received;
            fixed (byte* bytes = buffer)
            {
                do
                {
                    received = LibC.Recv(_fd, bytes, (nuint)buffer.Length, flags);
                }
                while (received < 0 && Marshal.GetLastPInvokeError() == LibC.EIntr);
            }

            if (received >= 0)
            {
                // Short: nothing more was there, unless the peer's close came with the same event as the data (the
                // kernel reports it once, so a wait for another event could last forever). The end of the stream is
                // never "drained": every later read sees it too.
                if (received > 0 && received < buffer.Length && !_readEnded)
                {
                    _readDrainedAt = seen;
                }

                error = SocketError.Success;
                return (int)received;
            }

            var errno = Marshal.GetLastPInvokeError();
            if (errno == LibC.EAgain)
            {
                if (!_readEnded)
                {
                    _readDrainedAt = seen;
                }

                error = SocketError.WouldBlock;
            }
            else
            {
                error = LibC.ToSocketError(errno);
            }

            return -1;
        }
        finally
        {
            if (added)
            {
                _handle.DangerousRelease();
            }
        }
    }

    /// <summary>Looks at one byte without taking it: 1 (data), 0 (the end), -1 with the error.</summary>
    private unsafe int Peek(int seen, out SocketError error)
    {
        byte probe;
        return Receive(new Span<byte>(&probe, 1), LibC.MsgPeek, seen, out error);
    }

    /// <summary>One send: the count taken (possibly short), or -1 with the error (WouldBlock: no room now).</summary>
    private unsafe int Send(ReadOnlySpan<byte> buffer, out SocketError error)
    {
        var added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            nint sent;
            fixed (byte* bytes = buffer)
            {
                do
                {
                    sent = LibC.Send(_fd, bytes, (nuint)buffer.Length, LibC.MsgNosignal);
                }
                while (sent < 0 && Marshal.GetLastPInvokeError() == LibC.EIntr);
            }

            if (sent >= 0)
            {
                error = SocketError.Success;
                return (int)sent;
            }

            var errno = Marshal.GetLastPInvokeError();
            error = errno == LibC.EAgain ? SocketError.WouldBlock : LibC.ToSocketError(errno);
            return -1;
        }
        finally
        {
            if (added)
            {
                _handle.DangerousRelease();
            }
        }
    }

    /// <summary>connect(2), as its outcome: InProgress while under way, IsConnected once done.</summary>
    private unsafe SocketError StartConnect(SocketAddress address)
    {
        var added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            int result;
            fixed (byte* bytes = address.Buffer.Span)
            {
                result = LibC.Connect(_fd, bytes, (uint)address.Size);
            }

            return result == 0 ? SocketError.Success : LibC.ToSocketError(Marshal.GetLastPInvokeError());
        }
        finally
        {
            if (added)
            {
                _handle.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// A read's waiting state, in an object of its own: created by the socket's first read and let go of when a
    /// listener takes the socket's events, so that a spliced socket does not carry it for the rest of its life.
    /// </summary>
    private sealed class ReadOperation(bool runContinuationsAsynchronously) : IValueTaskSource<int>
    {
        public ManualResetValueTaskSourceCore<int> Core = new() { RunContinuationsAsynchronously = runContinuationsAsynchronously };
        public Memory<byte> Buffer;
        public CancellationTokenRegistration Cancellation;
        public CancellationToken CancelToken; // the peer-close watch's, looked at again when the loop re-publishes it

        public int GetResult(short token)
        {
            Cancellation.Dispose(); // a late cancellation must not reach the next read
            Cancellation = default;
            CancelToken = default;
            try
            {
                return Core.GetResult(token);
            }
            finally
            {
                // The core keeps its last continuation's state (the awaiting state machine, and what that holds)
                // until the next reset: for an idle session that is for hours.
                Core.Reset();
            }
        }

        public ValueTaskSourceStatus GetStatus(short token) => Core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            Core.OnCompleted(continuation, state, token, flags);
    }

    /// <summary>A write's (or connect's) waiting state, kept as a read's is.</summary>
    private sealed class WriteOperation(bool runContinuationsAsynchronously) : IValueTaskSource
    {
        public ManualResetValueTaskSourceCore<int> Core = new() { RunContinuationsAsynchronously = runContinuationsAsynchronously };
        public ReadOnlyMemory<byte> Buffer;
        public CancellationTokenRegistration Cancellation;

        public void GetResult(short token)
        {
            Cancellation.Dispose();
            Cancellation = default;
            try
            {
                Core.GetResult(token);
            }
            finally
            {
                Core.Reset();
            }
        }

        public ValueTaskSourceStatus GetStatus(short token) => Core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            Core.OnCompleted(continuation, state, token, flags);
    }
}
