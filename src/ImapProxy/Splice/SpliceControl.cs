using System.IO.Pipelines;
using System.Net.Sockets;
using ImapProxy.Backends;

namespace ImapProxy.Splice;

/// <summary>
/// Ends a splice from outside (a kick, the end of the shutdown grace) or from inside (one direction finished).
/// </summary>
/// <remarks>
/// One object per session, with no token links and no callback registrations: a session parked in IDLE for
/// hours should cost as little as possible, and a linked token source with its registrations cost more than
/// the rest of the splice state. A stop may be requested before the splice has started; it then takes effect
/// the moment the splice attaches. Not disposable on purpose: the token source has no timer, and a late kick
/// must still find it usable.
/// </remarks>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "A timer-less token source holds nothing to release; disposing it would race late kicks.")]
internal sealed class SpliceControl
{
    private readonly CancellationTokenSource _flushCancel = new();
    private PipeReader? _clientInput;
    private BackendConnection? _backend;
    private int _stopRequested;
    private int _stopped;

    /// <summary>Whether a kick or the shutdown asked the splice to end.</summary>
    public bool StopRequested => Volatile.Read(ref _stopRequested) != 0;

    /// <summary>Cancels only a flush stuck on a client that does not read, and only when a stop is requested.</summary>
    internal CancellationToken FlushToken => _flushCancel.Token;

    /// <summary>Asks the splice to end (once; later calls do nothing). Safe from any thread, at any time.</summary>
    public void RequestStop()
    {
        if (Interlocked.Exchange(ref _stopRequested, 1) != 0)
        {
            return;
        }

        try
        {
            // Runs a pending flush's registration inline; whatever that does, the stop below still happens.
            _flushCancel.Cancel();
        }
        finally
        {
            Stop();
        }
    }

    /// <summary>Gives the control what it stops. Called once, by the splice, before either direction runs.</summary>
    internal void Attach(PipeReader clientInput, BackendConnection backend)
    {
        _clientInput = clientInput;
        Interlocked.Exchange(ref _backend, backend); // a full fence: a stop requested concurrently is seen below
        if (StopRequested)
        {
            Stop();
        }
    }

    /// <summary>
    /// Ends both directions without exceptions: the client read is cancelled through the pipe, and the backend
    /// read ends because the socket is shut down (a pending receive then completes with 0 bytes).
    /// </summary>
    internal void Stop()
    {
        var backend = Volatile.Read(ref _backend);
        if (backend is null || Interlocked.Exchange(ref _stopped, 1) != 0)
        {
            return;
        }

        _clientInput!.CancelPendingRead();
        try
        {
            backend.Socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // Already closed by the peer or disposed: the loop has ended or is ending anyway.
        }
    }
}
