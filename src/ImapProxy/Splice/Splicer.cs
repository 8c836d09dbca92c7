using System.Buffers;
using System.IO.Pipelines;
using System.Net.Security;
using System.Net.Sockets;
using ImapProxy.Backends;
using ImapProxy.Connections;
using ImapProxy.Protocol.Responses;
using ImapProxy.Telemetry;

namespace ImapProxy.Splice;

/// <summary>
/// Copies bytes both ways between a logged-in client and its backend until one side ends. The client-to-backend
/// loop runs in the entry method's own frame and the backend-to-client loop as one task beside it; the first to
/// finish stops the other, and both have ended before anything is disposed. Idle sessions hold no buffers: the
/// client side rests in a zero-byte read (the transport's own for a plaintext client, the TLS stream's for a TLS
/// one), the backend side in a zero-byte read on its stream.
/// </summary>
/// <remarks>
/// Per-session objects are kept few on purpose (memory per idle session is a benchmark figure): no WhenAny, no
/// task for the upstream loop, no token registrations; see <see cref="SpliceControl"/>. A TLS client is spliced on
/// its <see cref="SslStream"/> directly rather than through pipe adapters over it, which would keep two objects with
/// token sources and segment pools per session. A stop that lands while SslStream holds part of a record makes it
/// throw (EOF inside a record): the one stop that costs an exception, and the outcome is still "cancelled".
/// </remarks>
internal static class Splicer
{
    /// <summary>
    /// Read size for backend data; large FETCH bodies move in these steps (64 KB: a fifth to a third less CPU per large
    /// FETCH than 16 KB, measured; the buffer is taken only once data is there, so idle sessions never hold it).
    /// </summary>
    private const int BackendReadSize = 64 * 1024;

    /// <summary>Read size for a TLS client's data (what SslStream has decrypted is copied out in these steps).</summary>
    private const int TlsClientReadSize = 16 * 1024;

    /// <summary>Splices a plaintext client given as the transport's pipes.</summary>
    public static async Task<SpliceResult> RunAsync(PipeReader clientInput, PipeWriter clientOutput, BackendConnection backend, ImapProxyMetrics metrics, SpliceControl control)
    {
        var state = new State();
        control.Attach(clientInput, backend);
        var downstream = BackendToClientAsync(backend, clientOutput, null, null, state, metrics, control);

        // Client to backend. Loops end without exceptions (a session's end is an outcome, and thousands of sessions
        // ending at once must not cost thousands of throws): see SpliceControl.Stop. Whatever ends this loop, even
        // an unexpected exception, the other direction is stopped and awaited before the caller disposes anything.
        var backendStream = backend.Stream;
        try
        {
            SpliceOutcome upstream;
            while (true)
            {
                ReadResult result;
                try
                {
                    result = await clientInput.ReadAsync();
                }
                catch (Exception ex) when (IsConnectionError(ex))
                {
                    upstream = SpliceOutcome.ClientError;
                    break;
                }

                var buffer = result.Buffer;
                var end = result.IsCanceled ? SpliceOutcome.Cancelled : result.IsCompleted ? SpliceOutcome.ClientClosed : (SpliceOutcome?)null;
                bool written;
                try
                {
                    written = await WriteToBackendAsync(backendStream, buffer);
                }
                finally
                {
                    clientInput.AdvanceTo(buffer.End);
                }

                if (!written)
                {
                    upstream = SpliceOutcome.BackendError;
                    break;
                }

                state.Forwarded(metrics, buffer.Length);
                if (end is { } ended)
                {
                    upstream = ended;
                    break;
                }
            }

            state.Finished(upstream);
        }
        finally
        {
            control.Stop();
            await downstream;
        }

        return state.Result(control);
    }

    /// <summary>
    /// Splices a TLS client on its stream. <paramref name="transport"/> is what the TLS stream runs over: the splice
    /// is stopped by cancelling its input's read (which ends its reads), and batches its own writes through it.
    /// <paramref name="fromClient"/> holds what the client sent behind its login and the pre-auth reader had already
    /// decrypted; it goes to the backend first.
    /// </summary>
    public static async Task<SpliceResult> RunAsync(SslStream client, DuplexPipeStream transport, ReadOnlyMemory<byte> fromClient, BackendConnection backend, ImapProxyMetrics metrics, SpliceControl control)
    {
        var state = new State();
        control.Attach(transport.Input, backend);
        var downstream = BackendToClientAsync(backend, null, client, transport, state, metrics, control);
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
                        rented = ArrayPool<byte>.Shared.Rent(TlsClientReadSize);
                        read = await client.ReadAsync(rented);
                    }
                    catch (Exception ex) when (IsConnectionError(ex))
                    {
                        upstream = SpliceOutcome.ClientError;
                        break;
                    }

                    if (read == 0)
                    {
                        upstream = control.StopRequested ? SpliceOutcome.Cancelled : SpliceOutcome.ClientClosed;
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

    /// <summary>
    /// Backend to client: into the client's pipe when it is plaintext (the backend reads straight into the pipe's
    /// memory), through a pooled buffer into the TLS stream otherwise. Either <paramref name="output"/> is given, or
    /// <paramref name="tls"/> and the <paramref name="transport"/> under it.
    /// </summary>
    private static async Task<SpliceOutcome> BackendToClientAsync(BackendConnection backend, PipeWriter? output, SslStream? tls, DuplexPipeStream? transport, State state, ImapProxyMetrics metrics, SpliceControl control)
    {
        byte[]? rented = null;
        try
        {
            // Bytes the backend sent right behind its login OK were read during the hand-over.
            if (await ForwardHandoverBytesAsync(backend, output, tls, state, metrics, control.FlushToken) is { } ended)
            {
                return Finished(state, control, ended);
            }

            // The hand-over's reader is done: letting go of it frees its buffer segments (the stream stays open).
            backend.ReleaseInput();

            var stream = backend.Stream;
            var lastReadFilled = false;
            while (true)
            {
                if (!lastReadFilled)
                {
                    // Wait for data without holding a buffer (idle IDLE sessions cost no memory here).
                    _ = await stream.ReadAsync(Memory<byte>.Empty, CancellationToken.None);
                }

                Memory<byte> memory;
                if (tls is null)
                {
                    memory = output!.GetMemory(BackendReadSize);
                }
                else
                {
                    rented = ArrayPool<byte>.Shared.Rent(BackendReadSize);
                    memory = rented;
                }

                int read;
                try
                {
                    read = await stream.ReadAsync(memory, CancellationToken.None);
                }
                catch (Exception ex) when (IsConnectionError(ex))
                {
                    return Finished(state, control, SpliceOutcome.BackendError);
                }

                if (read == 0)
                {
                    return Finished(state, control, SpliceOutcome.BackendClosed);
                }

                lastReadFilled = read == memory.Length;
                state.Boundary.Advance(memory.Span[..read]);
                state.Delivered(metrics, read);
                try
                {
                    if (tls is null)
                    {
                        output!.Advance(read);
                        var flush = await output.FlushAsync(control.FlushToken);
                        if (flush.IsCanceled)
                        {
                            return Finished(state, control, SpliceOutcome.Cancelled);
                        }

                        if (flush.IsCompleted)
                        {
                            return Finished(state, control, SpliceOutcome.ClientClosed);
                        }
                    }
                    else
                    {
                        // The records of one read leave in one send (SslStream writes one record per 16 KB).
                        transport!.DeferFlush = true;
                        try
                        {
                            await tls.WriteAsync(memory[..read], control.FlushToken);
                        }
                        finally
                        {
                            transport.DeferFlush = false;
                        }

                        Return(ref rented);
                        await tls.FlushAsync(control.FlushToken);
                    }
                }
                catch (Exception ex) when (IsConnectionError(ex))
                {
                    return Finished(state, control, SpliceOutcome.ClientError);
                }
            }
        }
        catch (OperationCanceledException)
        {
            return Finished(state, control, SpliceOutcome.Cancelled);
        }
        catch (Exception ex) when (IsConnectionError(ex))
        {
            return Finished(state, control, SpliceOutcome.BackendError);
        }
        finally
        {
            Return(ref rented);
            backend.ReleaseInput(); // when the loop ended before it let go of the hand-over reader itself

            // Also when something unexpected was thrown: the upstream loop must never be left waiting alone.
            control.Stop();
        }
    }

    /// <summary>
    /// A client read's bytes to the backend; false when the backend failed. In its own method (which normally
    /// completes without suspending) so the upstream loop's frame, kept for the session's life, stays small.
    /// </summary>
    private static async ValueTask<bool> WriteToBackendAsync(Stream backend, ReadOnlySequence<byte> buffer)
    {
        try
        {
            foreach (var segment in buffer)
            {
                await backend.WriteAsync(segment);
            }

            return true;
        }
        catch (Exception ex) when (IsConnectionError(ex))
        {
            return false;
        }
    }

    /// <summary>
    /// What the hand-over read past the backend's login OK, to the client; the outcome if that ended the session.
    /// Once per session, in its own method so the downstream loop's frame does not keep its state.
    /// </summary>
    private static async ValueTask<SpliceOutcome?> ForwardHandoverBytesAsync(BackendConnection backend, PipeWriter? output, SslStream? tls, State state, ImapProxyMetrics metrics, CancellationToken flushCancellation)
    {
        if (!backend.Input!.TryRead(out var leftover))
        {
            return null;
        }

        var bytes = leftover.Buffer;
        foreach (var segment in bytes)
        {
            state.Boundary.Advance(segment.Span);
        }

        state.Delivered(metrics, bytes.Length);
        if (tls is null)
        {
            foreach (var segment in bytes)
            {
                output!.Write(segment.Span);
            }

            backend.Input.AdvanceTo(bytes.End);
            var first = await output!.FlushAsync(flushCancellation);
            return first.IsCanceled ? SpliceOutcome.Cancelled : first.IsCompleted ? SpliceOutcome.ClientClosed : null;
        }

        var copy = bytes.ToArray();
        backend.Input.AdvanceTo(bytes.End);
        try
        {
            await tls.WriteAsync(copy, flushCancellation);
            return null;
        }
        catch (Exception ex) when (IsConnectionError(ex))
        {
            return SpliceOutcome.ClientError;
        }
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
            System.Security.Authentication.AuthenticationException or // a TLS client's bad record or renegotiation
            Microsoft.AspNetCore.Connections.ConnectionResetException or Microsoft.AspNetCore.Connections.ConnectionAbortedException;

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
