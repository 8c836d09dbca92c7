using System.Net.Sockets;
using ImapProxy.Backends;
using ImapProxy.Connections.Transport;

namespace ImapProxy.Splice;

/// <summary>
/// Ends a splice from outside (a kick, the end of the shutdown grace) or from inside (one direction finished), by
/// shutting sockets down: a pending read then completes with 0 bytes, so no loop needs a token, a registration or an
/// exception to end.
/// </summary>
/// <remarks>
/// One object per session, with no token sources and no callback registrations: a session parked in IDLE for hours
/// should cost as little as possible. A stop may be requested before the splice has started; it then takes effect
/// the moment the splice attaches.
/// <para>
/// The client socket is shut down for receiving only, so that a BYE can still be written after a kick. A write to
/// the client that is in progress when a stop is requested may be stuck on a client that does not read; then the
/// client socket is shut down altogether, which fails that write. <see cref="TryBeginClientWrite"/> and
/// <see cref="RequestStop"/> pair up so that one of them always sees the other.
/// </para>
/// </remarks>
internal sealed class SpliceControl(TimeSpan? clientEndLimit = null)
{
    /// <summary>
    /// How long a splice waits, after the client ended its side, for the backend to close (Dovecot closes as soon as it
    /// sees the end, after the answers to what was sent before it; tested against Dovecot only).
    /// </summary>
    public static readonly TimeSpan DefaultClientEndLimit = TimeSpan.FromSeconds(60);

    private ISocketControl? _client;
    private BackendConnection? _backend;
    private int _stopRequested;
    private int _stopped;
    private int _clientWriting;

    /// <summary>How long the splice waits for the backend to close once the client has ended its side.</summary>
    public TimeSpan ClientEndLimit { get; } = clientEndLimit ?? DefaultClientEndLimit;

    /// <summary>Whether a kick or the shutdown asked the splice to end.</summary>
    public bool StopRequested => Volatile.Read(ref _stopRequested) != 0;

    /// <summary>Whether a write to the client is under way (for tests of a client that does not read).</summary>
    internal bool ClientWriteInProgress => Volatile.Read(ref _clientWriting) != 0;

    /// <summary>Whether either loop should end (a stop was requested, or one direction finished).</summary>
    internal bool Stopping => Volatile.Read(ref _stopped) != 0 || StopRequested;

    /// <summary>Asks the splice to end (once; later calls do nothing). Safe from any thread, at any time.</summary>
    public void RequestStop()
    {
        if (Interlocked.Exchange(ref _stopRequested, 1) != 0)
        {
            return;
        }

        Stop();

        // After the exchange above (a full fence): a write that began before it is seen here, and one that begins
        // after it sees the request and does not start.
        if (Volatile.Read(ref _clientWriting) != 0 && Volatile.Read(ref _client) is { } client)
        {
            client.Shutdown(SocketShutdown.Both);
        }
    }

    /// <summary>Gives the control what it stops. Called once, by the splice, before either direction runs.</summary>
    internal void Attach(ISocketControl client, BackendConnection backend)
    {
        Volatile.Write(ref _client, client);
        Interlocked.Exchange(ref _backend, backend); // a full fence: a stop requested concurrently is seen below
        if (StopRequested)
        {
            Stop();
        }
    }

    /// <summary>
    /// Ends both directions' reads: the client socket stops receiving, the backend socket is shut down both ways.
    /// A write to the client in progress finishes (the last of a response still reaches the client).
    /// </summary>
    internal void Stop()
    {
        var backend = Volatile.Read(ref _backend);
        if (backend is null || Interlocked.Exchange(ref _stopped, 1) != 0)
        {
            return;
        }

        _client!.Shutdown(SocketShutdown.Receive);
        backend.Socket.Shutdown(SocketShutdown.Both);
    }

    /// <summary>
    /// The splice ended because the backend closed: nothing is left waiting on either socket, and both are closed by
    /// their owners next, so neither is shut down first (two system calls per session saved; a client that has gone
    /// already made the shutdown fail). Later stop requests shut nothing down.
    /// </summary>
    internal void EndedByBackendClose() => Volatile.Write(ref _stopped, 1);

    /// <summary>Before a write to the client: false if a stop was requested (then nothing may be written).</summary>
    internal bool TryBeginClientWrite()
    {
        Interlocked.Exchange(ref _clientWriting, 1);
        if (StopRequested)
        {
            Volatile.Write(ref _clientWriting, 0);
            return false;
        }

        return true;
    }

    internal void EndClientWrite() => Volatile.Write(ref _clientWriting, 0);

    /// <summary>
    /// The client ended its side (a shutdown of its sending side, or a TLS close_notify) and the splice goes on for
    /// the backend's last answers: the backend is told the same way, and if it has not closed within
    /// <see cref="ClientEndLimit"/> the splice is stopped. The timer returned goes with the splice's end.
    /// </summary>
    internal Timer ClientEnded()
    {
        _backend!.Socket.Shutdown(SocketShutdown.Send);
        return new Timer(static state => ((SpliceControl)state!).RequestStop(), this, ClientEndLimit, Timeout.InfiniteTimeSpan);
    }
}
