using System.Buffers;
using System.Net.Security;
using System.Net.Sockets;
using ImapProxy.Backends;
using ImapProxy.Connections.Transport;
using ImapProxy.Connections.Transport.Epoll;
using ImapProxy.Protocol.Responses;
using ImapProxy.Telemetry;
using ImapProxy.Tls;

namespace ImapProxy.Splice;

/// <summary>
/// Copies bytes both ways between a logged-in client and its backend until one side ends, and tells the session
/// (<see cref="ISpliceOwner"/>). Where the epoll engine holds both sockets, <see cref="EpollSplice"/> does it with
/// event handlers; otherwise two copy loops do: the client-to-backend loop in <c>CopyAsync</c>'s own frame and the
/// backend-to-client loop as one task beside it; the first to
/// finish stops the other, and both have ended before anything is disposed. Idle sessions hold no buffers: each side
/// rests in a zero-byte read on its stream (the socket's, or the TLS stream's over it), and a buffer is rented from
/// the shared pool only once data is there.
/// </summary>
/// <remarks>
/// Per-session objects are kept few on purpose (memory per idle session is a benchmark figure): no WhenAny, no task
/// for the upstream loop, no token registrations; see <see cref="SpliceControl"/>. A stop that lands while SslStream
/// holds part of a record makes it throw (end of stream inside a record): the one stop that costs an exception, and
/// the outcome is still "cancelled".
/// </remarks>
internal static class Splicer
{
    /// <summary>
    /// Read size for backend data; large FETCH bodies move in these steps (64 KB: a fifth to a third less CPU per large
    /// FETCH than 16 KB, measured).
    /// </summary>
    private const int BackendReadSize = 64 * 1024;

    /// <summary>Read size for client data: commands, and APPEND uploads in these steps.</summary>
    private const int ClientReadSize = 16 * 1024;

    /// <summary>
    /// Splices <paramref name="client"/> (the client socket's stream, or the TLS stream over it) with the backend, and
    /// tells <paramref name="owner"/> when it has ended. <paramref name="clientTransport"/> is the stream under the TLS
    /// stream (the same as <paramref name="client"/> without TLS), <paramref name="clientSocket"/> the socket under it,
    /// which a stop shuts down. <paramref name="fromClient"/> holds what the client sent behind its login and the
    /// pre-auth reader had already read; it goes to the backend first. A client and a plaintext backend on one thread
    /// of the epoll engine are spliced by <see cref="EpollSplice"/>'s event handlers (TLS clients through their record
    /// layer: always a <see cref="TlsServerStream"/>'s, an <see cref="SslStream"/>'s when it can hand it over), any
    /// others by two copy loops. Throws only when the splice could not begin; the owner is then never told.
    /// </summary>
    public static void Start(Stream client, Stream clientTransport, ISocketControl clientSocket, ReadOnlyMemory<byte> fromClient, BackendConnection backend, ImapProxyMetrics metrics, SpliceControl control, ISpliceOwner owner)
    {
        if (clientTransport is PrefixedStream { IsDrained: true } prefixed)
        {
            clientTransport = prefixed.Inner; // what a PROXY header's reader read ahead is long consumed by the handshake
        }

        TlsRecordLayer? tls = null;
        if (!EpollSplice.CanSplice(clientTransport, backend.Stream)
            || (client is SslStream ssl && (tls = TlsRecordLayer.TryTakeOver(ssl, out _)) is null))
        {
            _ = RunStreamsAsync(client, clientSocket, fromClient, backend, metrics, control, owner);
            return;
        }

        if (client is TlsServerStream own)
        {
            tls = own.DetachLayer(); // what the client sent behind its login may wait in it: the splice reads that first
        }

        if (tls is not null)
        {
            owner.TlsTakenOver(tls); // the owner's from here, even if the splice cannot begin
        }

        control.Attach(clientSocket, backend);
        var fromBackend = backend.TakePending();
        EpollSplice.Start((EpollStream)clientTransport, (EpollStream)backend.Stream, tls, fromClient, fromBackend, metrics, control, owner);
    }

    /// <summary>The copy loops, their end reported to the owner (a failure too, as <see cref="EpollSplice"/> reports its).</summary>
    private static async Task RunStreamsAsync(Stream client, ISocketControl clientSocket, ReadOnlyMemory<byte> fromClient, BackendConnection backend, ImapProxyMetrics metrics, SpliceControl control, ISpliceOwner owner)
    {
        SpliceResult result;
        try
        {
            result = await CopyAsync(client, clientSocket, fromClient, backend, metrics, control);
        }
        catch (Exception ex)
        {
            owner.SpliceEnded(default, ex);
            return;
        }

        owner.SpliceEnded(result, null);
    }

    private static async Task<SpliceResult> CopyAsync(Stream client, ISocketControl clientSocket, ReadOnlyMemory<byte> fromClient, BackendConnection backend, ImapProxyMetrics metrics, SpliceControl control)
    {
        var state = new State();
        control.Attach(clientSocket, backend);
        var downstream = BackendToClientAsync(backend, client, state, metrics, control);

        // Client to backend. Whatever ends this loop, even an unexpected exception, the other direction is stopped
        // and awaited before the caller disposes anything.
        var backendStream = backend.Stream;
        byte[]? rented = null;
        try
        {
            SpliceOutcome upstream;
            while (true)
            {
                int read;
                if (!fromClient.IsEmpty)
                {
                    read = fromClient.Length;
                }
                else
                {
                    try
                    {
                        // Wait for data without holding a buffer; SslStream then holds none either.
                        _ = await client.ReadAsync(Memory<byte>.Empty);
                        if (control.Stopping)
                        {
                            // Shut down for receiving: a read now could still find bytes the client sent after the stop.
                            upstream = control.StopRequested ? SpliceOutcome.Cancelled : SpliceOutcome.ClientClosed;
                            break;
                        }

                        rented = ArrayPool<byte>.Shared.Rent(ClientReadSize);
                        read = await client.ReadAsync(rented);
                    }
                    catch (Exception ex) when (IsConnectionError(ex))
                    {
                        upstream = control.StopRequested ? SpliceOutcome.Cancelled : SpliceOutcome.ClientError;
                        break;
                    }

                    if (control.StopRequested)
                    {
                        upstream = SpliceOutcome.Cancelled;
                        break;
                    }

                    if (read == 0)
                    {
                        // The client ended its side: the backend is told, and its last answers still reach the client
                        // until it closes (or the limit stops the splice).
                        Return(ref rented);
                        state.Finished(SpliceOutcome.ClientClosed);
                        using (control.ClientEnded())
                        {
                            await downstream;
                        }

                        upstream = SpliceOutcome.ClientClosed;
                        break;
                    }

                    fromClient = rented.AsMemory(0, read);
                }

                try
                {
                    await backendStream.WriteAsync(fromClient);
                }
                catch (Exception ex) when (IsConnectionError(ex))
                {
                    upstream = SpliceOutcome.BackendError;
                    break;
                }

                fromClient = default;
                Return(ref rented);
                state.Forwarded(metrics, read);
            }

            state.Finished(upstream);
        }
        finally
        {
            Return(ref rented);
            control.Stop();
            await downstream;
        }

        return state.Result(control);
    }

    /// <summary>Backend to client, through a pooled buffer taken once the backend has sent something.</summary>
    private static async Task<SpliceOutcome> BackendToClientAsync(BackendConnection backend, Stream client, State state, ImapProxyMetrics metrics, SpliceControl control)
    {
        byte[]? rented = null;
        try
        {
            // Bytes the backend sent right behind its login OK were read during the hand-over.
            if (await ForwardHandoverBytesAsync(backend, client, state, metrics, control) is { } ended)
            {
                return Finished(state, control, ended);
            }

            var stream = backend.Stream;
            var lastReadFilled = false;
            while (true)
            {
                if (!lastReadFilled)
                {
                    // Wait for data without holding a buffer (idle IDLE sessions cost no memory here).
                    _ = await stream.ReadAsync(Memory<byte>.Empty, CancellationToken.None);
                }

                rented = ArrayPool<byte>.Shared.Rent(BackendReadSize);
                int read;
                try
                {
                    read = await stream.ReadAsync(rented, CancellationToken.None);
                }
                catch (Exception ex) when (IsConnectionError(ex))
                {
                    return Finished(state, control, SpliceOutcome.BackendError);
                }

                if (read == 0)
                {
                    return Finished(state, control, SpliceOutcome.BackendClosed);
                }

                lastReadFilled = read == rented.Length;
                if (await WriteToClientAsync(client, rented.AsMemory(0, read), state, metrics, control) is { } failed)
                {
                    return Finished(state, control, failed);
                }

                Return(ref rented);
            }
        }
        catch (Exception ex) when (IsConnectionError(ex))
        {
            return Finished(state, control, SpliceOutcome.BackendError);
        }
        finally
        {
            Return(ref rented);

            // Also when something unexpected was thrown: the upstream loop must never be left waiting alone.
            control.Stop();
        }
    }

    /// <summary>
    /// One write to the client; the outcome if it ended the session. Marked as a client write for the control, so
    /// that a kick can end it when the client does not read. Bytes a stop keeps from being written are not counted,
    /// nor seen by the boundary tracker: a BYE may follow only what the client was sent.
    /// </summary>
    private static async ValueTask<SpliceOutcome?> WriteToClientAsync(Stream client, ReadOnlyMemory<byte> bytes, State state, ImapProxyMetrics metrics, SpliceControl control)
    {
        if (!control.TryBeginClientWrite())
        {
            return SpliceOutcome.Cancelled;
        }

        state.Boundary.Advance(bytes.Span);
        state.Delivered(metrics, bytes.Length);
        try
        {
            await client.WriteAsync(bytes, CancellationToken.None);
            return null;
        }
        catch (Exception ex) when (IsConnectionError(ex))
        {
            return control.StopRequested ? SpliceOutcome.Cancelled : SpliceOutcome.ClientError;
        }
        finally
        {
            control.EndClientWrite();
        }
    }

    /// <summary>
    /// What the hand-over read past the backend's login OK, to the client; the outcome if that ended the session.
    /// Once per session, in its own method so the downstream loop's frame does not keep its state.
    /// </summary>
    private static async ValueTask<SpliceOutcome?> ForwardHandoverBytesAsync(BackendConnection backend, Stream client, State state, ImapProxyMetrics metrics, SpliceControl control)
    {
        var bytes = backend.TakePending();
        if (bytes.Length == 0)
        {
            return null;
        }

        return await WriteToClientAsync(client, bytes, state, metrics, control);
    }

    /// <summary>The downstream loop's end: recorded, and the upstream loop stopped.</summary>
    private static SpliceOutcome Finished(State state, SpliceControl control, SpliceOutcome outcome)
    {
        state.Finished(outcome);
        control.Stop();
        return outcome;
    }

    private static void Return(ref byte[]? rented)
    {
        if (rented is not null)
        {
            ArrayPool<byte>.Shared.Return(rented);
            rented = null;
        }
    }

    private static bool IsConnectionError(Exception ex) =>
        ex is IOException or SocketException or ObjectDisposedException or InvalidOperationException or
            System.Security.Authentication.AuthenticationException; // a TLS client's bad record or renegotiation

    /// <summary>What both loops share. Each byte counter is written by one loop only and read after both ended.</summary>
    private sealed class State
    {
        private int _firstSet;
        private long _fromClient;
        private long _fromBackend;

        public ResponseBoundaryTracker Boundary { get; } = new();

        /// <summary>The outcome of the loop that finished first.</summary>
        private SpliceOutcome First { get; set; }

        public void Forwarded(ImapProxyMetrics metrics, long bytes)
        {
            _fromClient += bytes;
            metrics.ClientToBackend(bytes);
        }

        public void Delivered(ImapProxyMetrics metrics, long bytes)
        {
            _fromBackend += bytes;
            metrics.BackendToClient(bytes);
        }

        public void Finished(SpliceOutcome outcome)
        {
            if (Interlocked.Exchange(ref _firstSet, 1) == 0)
            {
                First = outcome;
            }
        }

        /// <summary>After both loops ended: a requested stop wins over however the loops saw it.</summary>
        public SpliceResult Result(SpliceControl control) =>
            new(control.StopRequested ? SpliceOutcome.Cancelled : First, _fromClient, _fromBackend, Boundary.AtLineStart, Boundary.SawBye);
    }
}
