using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using ImapProxy.Telemetry;
using Microsoft.Extensions.Logging;

namespace ImapProxy.Connections.Transport.Epoll;

/// <summary>What a registered descriptor's events go to; called on its loop's thread.</summary>
internal interface IEpollHandler
{
    void OnEvents(uint events);
}

/// <summary>
/// The proxy's own socket engine for IMAP connections on Linux: a few threads, each waiting in epoll_wait on the
/// sockets given to it and running what their events wake on the spot (as nginx's and HAProxy's workers do).
/// </summary>
/// <remarks>
/// .NET's socket engine tries a receive before waiting on epoll every time a read is posted, and a proxied IMAP
/// command is a short read on each side, so half of its receives found nothing (EAGAIN). Here a read that came back
/// short marks the socket drained until epoll reports it again (edge-triggered), as nginx does, and a session's
/// client and backend sockets share one thread. Sockets this engine owns are never touched by .NET's engine (no
/// async operation of <see cref="Socket"/> is used on them), so no event reaches two engines.
/// </remarks>
internal sealed class EpollEngine : ISocketEngine, IDisposable
{
    private readonly EpollLoop[] _loops;
    private int _next = -1;

    public EpollEngine(int threads, bool inlineContinuations, ILogger logger)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        Handlers = new HandlerTable();
        _loops = new EpollLoop[threads];
        try
        {
            for (var i = 0; i < threads; i++)
            {
                _loops[i] = new EpollLoop(this, i, inlineContinuations, logger);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Whether this machine can run the engine (Linux, with the libc calls it makes).</summary>
    public static bool IsSupported => OperatingSystem.IsLinux();

    internal HandlerTable Handlers { get; }

    internal IReadOnlyList<EpollLoop> Loops => _loops;

    /// <summary>The loop for a new client connection: round robin.</summary>
    public EpollLoop NextLoop() => _loops[(int)((uint)Interlocked.Increment(ref _next) % (uint)_loops.Length)];

    public Stream Attach(Socket socket) => new EpollStream(new EpollSocket(socket, NextLoop()));

    public async ValueTask<Stream> ConnectAsync(IPEndPoint endpoint, Stream? near, CancellationToken cancellationToken)
    {
        // The backend side of a session runs on its client's loop: one thread moves a command both ways.
        var loop = (near as EpollStream)?.Socket.Loop ?? NextLoop();
        return new EpollStream(await EpollSocket.ConnectAsync(loop, endpoint, cancellationToken));
    }

    public void Dispose()
    {
        foreach (var loop in _loops)
        {
            loop?.Dispose();
        }
    }
}

/// <summary>
/// One engine thread: its epoll instance, the wake-up descriptor that brings work from other threads, and a read
/// buffer that the handlers running on it share (one command at a time runs on a thread).
/// </summary>
internal sealed unsafe class EpollLoop : IDisposable
{
    private const int MaxEvents = 256;
    private const ulong WakeToken = ulong.MaxValue;
    private const int SharedBufferSize = 64 * 1024;
    private const uint ReadEvents = LibC.EpollIn | LibC.EpollRdHup | LibC.EpollEt;
    private const uint ReadWriteEvents = ReadEvents | LibC.EpollOut;

    [ThreadStatic]
    private static EpollLoop? t_current;

    private readonly EpollEngine _engine;
    private readonly ILogger _logger;
    private readonly Descriptor _epoll;
    private readonly Descriptor _wake;
    private readonly Thread _thread;
    private readonly ConcurrentQueue<(Action<object?> Action, object? State)> _work = new();
    private int _wakePending;
    private volatile bool _stopping;
    private int _ended; // the thread has run its last event and the work queued until then

    public EpollLoop(EpollEngine engine, int index, bool inlineContinuations, ILogger logger)
    {
        _engine = engine;
        _logger = logger;
        InlineContinuations = inlineContinuations;
        var epoll = LibC.EpollCreate(LibC.EpollCloexec);
        if (epoll < 0)
        {
            throw new SocketException((int)LibC.ToSocketError(Marshal.GetLastPInvokeError()));
        }

        _epoll = new Descriptor(epoll);
        var wake = LibC.EventFd(0, LibC.EfdCloexec | LibC.EfdNonblock);
        _wake = new Descriptor(wake);
        if (wake < 0 || Control(LibC.EpollCtlAdd, wake, LibC.EpollIn | LibC.EpollEt, WakeToken) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            _epoll.Dispose();
            _wake.Dispose();
            throw new SocketException((int)LibC.ToSocketError(errno));
        }

        _thread = new Thread(Run) { IsBackground = true, Name = $"ImapProxy I/O {index}" };
        _thread.UnsafeStart();
    }

    /// <summary>Whether completions run their continuations on this thread (else on the thread pool).</summary>
    public bool InlineContinuations { get; }

    /// <summary>True on this loop's own thread.</summary>
    public bool IsCurrent => t_current == this;

    /// <summary>The loop whose thread this is; null on any other thread.</summary>
    public static EpollLoop? Current => t_current;

    /// <summary>A buffer for handlers running on this loop's thread, and only for the duration of one call.</summary>
    public byte[] SharedBuffer { get; } = GC.AllocateUninitializedArray<byte>(SharedBufferSize, pinned: true);

    /// <summary>
    /// Adds a descriptor, edge-triggered for reading and the peer's close, and for writing too when
    /// <paramref name="writes"/> (else from <see cref="WatchWrites"/> on); its events go to <paramref name="handler"/>
    /// until <see cref="Remove"/>. Returns the registration's token.
    /// </summary>
    /// <remarks>
    /// A socket watched for writing reports itself writable as soon as it is added: for an accepted socket that is an
    /// event with nothing to do (its first writes find room), which woke a sleeping loop once per connection. Sockets
    /// are watched for writing only from their first write that has to wait (and a connecting socket at once: its
    /// connect completes as an event for writing).
    /// </remarks>
    public ulong Add(int fd, IEpollHandler handler, bool writes) => Add(fd, writes ? ReadWriteEvents : ReadEvents, handler);

    /// <summary>
    /// Watches a registered descriptor for writing too (EPOLL_CTL_MOD; edge-triggered, as before). The kernel looks
    /// at the socket as it changes the registration and reports it at once if it is writable by then, so a write that
    /// found no room just before this call is not left waiting for an event that came in between. The caller holds a
    /// reference on the descriptor. Returns 0, or the errno of a failure.
    /// </summary>
    public int WatchWrites(int fd, ulong token)
    {
        if (!Use(_epoll))
        {
            return LibC.EBadf; // the engine has stopped
        }

        try
        {
            return Control(LibC.EpollCtlMod, fd, ReadWriteEvents, token) == 0 ? 0 : Marshal.GetLastPInvokeError();
        }
        finally
        {
            _epoll.DangerousRelease();
        }
    }

    /// <summary>
    /// Adds a listening socket, level-triggered and exclusive (EPOLLEXCLUSIVE: a new connection wakes one of the loops
    /// waiting on it, not all): a connection left pending is reported again on the loop's next wait. Returns the
    /// registration's token, for <see cref="RemoveListening"/>.
    /// </summary>
    public ulong AddListening(int fd, IEpollHandler handler) => Add(fd, LibC.EpollIn | LibC.EpollExclusive, handler);

    /// <summary>
    /// Takes a listening socket out of this loop's epoll (it stays open, and in the other loops') and stops its events
    /// reaching the handler. The caller holds a reference on the socket, so <paramref name="fd"/> is still its number.
    /// </summary>
    public void RemoveListening(int fd, ulong token)
    {
        _engine.Handlers.Remove(token);
        if (Use(_epoll))
        {
            _ = Control(LibC.EpollCtlDel, fd, 0, 0);
            _epoll.DangerousRelease();
        }
    }

    /// <summary>
    /// Stops a registration's events reaching its handler. The descriptor itself leaves epoll when it is closed, which
    /// the socket's dispose does next (no EPOLL_CTL_DEL: one system call less per socket). Events collected or arriving until
    /// then carry the old token and find no handler; so would those of a descriptor that outlived its close in a
    /// duplicate (the proxy makes none, and its sockets are close-on-exec).
    /// </summary>
    public void Remove(ulong token) => _engine.Handlers.Remove(token);

    /// <summary>
    /// Runs <paramref name="action"/> on this loop's thread: at once when called there, else soon. Once the loop is
    /// stopping, throws a <see cref="SocketException"/> (Shutdown), as for a socket added then; work queued before runs
    /// as the thread ends, and work queued just as it stops may never run.
    /// </summary>
    public void Execute(Action<object?> action, object? state)
    {
        if (IsCurrent)
        {
            action(state);
            return;
        }

        if (_stopping)
        {
            throw new SocketException((int)SocketError.Shutdown);
        }

        _work.Enqueue((action, state));
        if (Interlocked.Exchange(ref _wakePending, 1) == 0)
        {
            Wake();
        }
    }

    /// <summary>
    /// Runs <paramref name="action"/> on this loop's thread as <see cref="Execute"/> does, but never refuses: once the
    /// loop is stopping, the action runs after the thread's last event, on the thread as it ends, or at once on the
    /// caller's thread when it has ended. For work that ends something the thread's events touch too (a time limit, a
    /// cancellation): Execute's refusal would leave it to the caller, running beside the thread's last events.
    /// </summary>
    public void ExecuteOrAfterStop(Action<object?> action, object? state)
    {
        if (IsCurrent)
        {
            action(state);
            return;
        }

        // Enqueued, then _ended looked at, while the thread sets _ended, then empties the queue (full fences on both
        // sides): one of the two sees the other. Whichever runs the work first claims it, so it runs once, and the
        // caller runs nothing but its own. An object per call: this serves time limits and cancellations, both rare.
        var work = new ClaimedOnce(action, state);
        _work.Enqueue((static work => ((ClaimedOnce)work!).Run(), work));
        if (Volatile.Read(ref _ended) != 0)
        {
            work.Run();
        }
        else if (Interlocked.Exchange(ref _wakePending, 1) == 0)
        {
            Wake();
        }
    }

    /// <summary>
    /// Whether the loop is stopping (<see cref="Dispose"/> has begun, or its thread ended on an error):
    /// <see cref="Execute"/> and <see cref="Post"/> refuse work from now on.
    /// </summary>
    internal bool IsStopping => _stopping;

    /// <summary>
    /// Queues <paramref name="action"/> to run on this loop's thread after the events it is handling now, even when
    /// called there (unlike <see cref="Execute"/>): what is queued from the thread itself waits for the next round of
    /// events, so work that keeps queuing itself cannot keep the loop from them. Refuses as Execute does once stopping.
    /// </summary>
    public void Post(Action<object?> action, object? state)
    {
        if (_stopping)
        {
            throw new SocketException((int)SocketError.Shutdown);
        }

        _work.Enqueue((action, state));
        if (!IsCurrent && Interlocked.Exchange(ref _wakePending, 1) == 0)
        {
            Wake();
        }
    }

    /// <summary>
    /// Ends the thread (waiting for it, a few seconds at most) and closes its descriptors once nothing uses them:
    /// sessions still open may go on calling <see cref="Remove"/> (which only frees a handler slot) and
    /// <see cref="Execute"/> (which refuses).
    /// </summary>
    public void Dispose()
    {
        _stopping = true;
        Wake();
        if (!IsCurrent)
        {
            _thread.Join(TimeSpan.FromSeconds(5));
        }

        _wake.Dispose();
        _epoll.Dispose();
    }

    /// <summary>
    /// Takes a reference on <paramref name="descriptor"/> (false once it is closed): its number stays ours until the
    /// reference is released, never another descriptor's that reused it.
    /// </summary>
    private static bool Use(Descriptor descriptor)
    {
        var added = false;
        try
        {
            descriptor.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
        }

        return added;
    }

    private void Wake()
    {
        if (Use(_wake))
        {
            ulong one = 1;
            _ = LibC.Write(_wake.Fd, (byte*)&one, sizeof(ulong));
            _wake.DangerousRelease();
        }
    }

    private ulong Add(int fd, uint events, IEpollHandler handler)
    {
        var token = _engine.Handlers.Add(handler);
        if (!Use(_epoll))
        {
            _engine.Handlers.Remove(token);
            throw new SocketException((int)SocketError.Shutdown); // the engine has stopped
        }

        try
        {
            if (Control(LibC.EpollCtlAdd, fd, events, token) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                _engine.Handlers.Remove(token);
                throw new SocketException((int)LibC.ToSocketError(errno));
            }
        }
        finally
        {
            _epoll.DangerousRelease();
        }

        return token;
    }

    /// <summary>epoll_ctl; the caller holds a reference on <see cref="_epoll"/>.</summary>
    private int Control(int operation, int fd, uint events, ulong token)
    {
        var ev = stackalloc byte[16];
        *(uint*)ev = events;
        *(ulong*)(ev + LibC.EpollDataOffset) = token;
        return LibC.EpollCtl(_epoll.Fd, operation, fd, ev);
    }

    private void Run()
    {
        t_current = this;
        var size = LibC.EpollEventSize;
        var offset = LibC.EpollDataOffset;
        var events = (byte*)NativeMemory.Alloc((nuint)(MaxEvents * size));

        // Held while the thread runs: a Dispose from elsewhere closes the descriptors only after the thread is done.
        var epollHeld = false;
        var wakeHeld = false;
        try
        {
            _epoll.DangerousAddRef(ref epollHeld);
            _wake.DangerousAddRef(ref wakeHeld);
        }
        catch (ObjectDisposedException)
        {
            // Disposed before the thread got going.
        }

        try
        {
            while (epollHeld && wakeHeld && !_stopping)
            {
                // Work queued from this thread (Post) is due: look at the events without waiting for more.
                var count = LibC.EpollWait(_epoll.Fd, events, MaxEvents, _work.IsEmpty ? -1 : 0);
                if (count < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno == LibC.EIntr)
                    {
                        continue;
                    }

                    Log.EngineFailed(_logger, _thread.Name!, $"epoll_wait: {LibC.ToSocketError(errno)}");
                    return;
                }

                for (var i = 0; i < count; i++)
                {
                    var ev = events + (i * size);
                    var token = *(ulong*)(ev + offset);
                    if (token == WakeToken)
                    {
                        ulong drained;
                        _ = LibC.Read(_wake.Fd, (byte*)&drained, sizeof(ulong));
                        // A full fence: the queue is looked at below only after the flag is visibly cleared, or
                        // an Execute that saw it still set (and wrote nothing) could leave its work waiting.
                        Interlocked.Exchange(ref _wakePending, 0);
                        continue;
                    }

                    if (_engine.Handlers.Get(token) is { } handler)
                    {
                        Dispatch(handler, *(uint*)ev);
                    }
                }

                // Only what is queued now: what this work queues for itself runs after the next look at the events.
                if (!_work.IsEmpty)
                {
                    for (var pending = _work.Count; pending > 0 && _work.TryDequeue(out var work); pending--)
                    {
                        Run(work.Action, work.State);
                    }
                }
            }
        }
        finally
        {
            // Work queued until now runs here, after the last event; what ExecuteOrAfterStop queues later runs on its
            // caller. A loop that ended on an error refuses work from now on, as a stopped one does.
            _stopping = true;
            Interlocked.Exchange(ref _ended, 1);
            while (_work.TryDequeue(out var work))
            {
                Run(work.Action, work.State);
            }

            NativeMemory.Free(events);
            if (wakeHeld)
            {
                _wake.DangerousRelease();
            }

            if (epollHeld)
            {
                _epoll.DangerousRelease();
            }
        }
    }

    /// <summary>Work that may be run from two places (see <see cref="ExecuteOrAfterStop"/>), and runs at the first.</summary>
    private sealed class ClaimedOnce(Action<object?> action, object? state)
    {
        private int _claimed;

        public void Run()
        {
            if (Interlocked.Exchange(ref _claimed, 1) == 0)
            {
                action(state);
            }
        }
    }

    /// <summary>For a handler that caught a failure of its own (a bug) and ended its session: logged as the loop does.</summary>
    public void ReportHandlerFailure(Exception exception) => Log.EngineHandlerFailed(_logger, _thread.Name!, exception);

    /// <summary>Handlers do not throw; if one does, the thread goes on serving every other socket.</summary>
    private void Dispatch(IEpollHandler handler, uint events)
    {
        try
        {
            handler.OnEvents(events);
        }
        catch (Exception ex)
        {
            Log.EngineHandlerFailed(_logger, _thread.Name!, ex);
        }
    }

    private void Run(Action<object?> action, object? state)
    {
        try
        {
            action(state);
        }
        catch (Exception ex)
        {
            Log.EngineHandlerFailed(_logger, _thread.Name!, ex);
        }
    }
}

/// <summary>A descriptor the engine opened (a loop's epoll instance or eventfd, a socket), closed when the last reference on it goes.</summary>
internal sealed class Descriptor : SafeHandle
{
    public Descriptor(int fd)
        : base(invalidHandleValue: -1, ownsHandle: true) => SetHandle(fd);

    public override bool IsInvalid => handle < 0;

    /// <summary>The number, for calls made under a reference.</summary>
    public int Fd => (int)handle;

    protected override bool ReleaseHandle() => LibC.Close((int)handle) == 0;
}

/// <summary>
/// Registration tokens to handlers: a slot index in the low half and the slot's generation in the high half, so
/// that an event collected before its descriptor was removed never reaches the slot's next owner as its own. Slots
/// live in chunks that never move, read without a lock by the loops.
/// </summary>
internal sealed class HandlerTable
{
    private const int ChunkShift = 12;
    private const int ChunkSize = 1 << ChunkShift;

    private readonly Lock _lock = new();
    private readonly Stack<int> _free = new();
    private Slot[][] _chunks = [new Slot[ChunkSize]];
    private int _used;

    /// <summary>Registered handlers (for tests and diagnostics).</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _used - _free.Count;
            }
        }
    }

    public ulong Add(IEpollHandler handler)
    {
        lock (_lock)
        {
            var index = _free.Count > 0 ? _free.Pop() : _used++;
            var chunk = index >> ChunkShift;
            if (chunk == _chunks.Length)
            {
                var grown = new Slot[chunk + 1][];
                _chunks.CopyTo(grown, 0);
                grown[chunk] = new Slot[ChunkSize];
                Volatile.Write(ref _chunks, grown);
            }

            ref var slot = ref _chunks[chunk][index & (ChunkSize - 1)];
            Volatile.Write(ref slot.Handler, handler);
            return ((ulong)slot.Generation << 32) | (uint)index;
        }
    }

    public void Remove(ulong token)
    {
        var index = (int)(uint)token;
        lock (_lock)
        {
            ref var slot = ref _chunks[index >> ChunkShift][index & (ChunkSize - 1)];
            if (slot.Generation != (uint)(token >> 32) || slot.Handler is null)
            {
                return;
            }

            Volatile.Write(ref slot.Generation, slot.Generation + 1);
            slot.Handler = null;
            _free.Push(index);
        }
    }

    public IEpollHandler? Get(ulong token)
    {
        var index = (int)(uint)token;
        var chunks = Volatile.Read(ref _chunks);
        var chunk = index >> ChunkShift;
        if (chunk >= chunks.Length)
        {
            return null;
        }

        ref var slot = ref chunks[chunk][index & (ChunkSize - 1)];
        var handler = Volatile.Read(ref slot.Handler);

        // Remove bumps the generation before the slot can take a new handler, so a handler read here that belongs to
        // a later registration always comes with a generation that does not match. The reverse can happen: the
        // removed handler, read before its generation moved, gets one late event (handlers ignore events once
        // disposed, and treat any event as "try again", never as data).
        return Volatile.Read(ref slot.Generation) == (uint)(token >> 32) ? handler : null;
    }

    private struct Slot
    {
        public IEpollHandler? Handler;
        public uint Generation;
    }
}
