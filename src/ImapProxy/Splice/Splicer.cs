using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using ImapProxy.Backends;
using ImapProxy.Protocol.Responses;
using ImapProxy.Telemetry;

namespace ImapProxy.Splice;

/// <summary>
/// Copies bytes both ways between a logged-in client and its backend until one side ends. The client-to-backend
/// loop runs in <see cref="RunAsync"/>'s own frame and the backend-to-client loop as one task beside it; the first
/// to finish stops the other, and both have ended before anything is disposed. Idle sessions hold no buffers: the
/// client side rests in the transport's own zero-byte read, the backend side in a zero-byte read on its stream.
/// </summary>
/// <remarks>
/// Per-session objects are kept few on purpose (memory per idle session is a benchmark figure): no WhenAny, no
/// task for the upstream loop, no token registrations; see <see cref="SpliceControl"/>.
/// </remarks>
internal static class Splicer
{
    /// <summary>Read size for backend data; large FETCH bodies move in these steps.</summary>
    private const int BackendReadSize = 16 * 1024;

    public static async Task<SpliceResult> RunAsync(PipeReader clientInput, PipeWriter clientOutput, BackendConnection backend, ImapProxyMetrics metrics, SpliceControl control)
    {
        var state = new State();
        control.Attach(clientInput, backend);
        var downstream = BackendToClientAsync(backend, clientOutput, state, metrics, control);

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
                var written = false;
                try
                {
                    foreach (var segment in buffer)
                    {
                        await backendStream.WriteAsync(segment);
                    }

                    written = true;
                }
                catch (Exception ex) when (IsConnectionError(ex))
                {
                    // Recorded below, after the buffer is released.
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

                state.FromClient += buffer.Length;
                metrics.ClientToBackend(buffer.Length);
                if (result.IsCanceled || result.IsCompleted)
                {
                    upstream = result.IsCanceled ? SpliceOutcome.Cancelled : SpliceOutcome.ClientClosed;
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

        var outcome = control.StopRequested ? SpliceOutcome.Cancelled : state.First;
        return new SpliceResult(outcome, state.FromClient, state.FromBackend, state.Boundary.AtLineStart, state.Boundary.SawBye);
    }

    private static async Task<SpliceOutcome> BackendToClientAsync(BackendConnection backend, PipeWriter output, State state, ImapProxyMetrics metrics, SpliceControl control)
    {
        var boundary = state.Boundary;
        var flushCancellation = control.FlushToken;
        try
        {
            // Bytes the backend sent right behind its login OK were read during the hand-over.
            if (backend.Input.TryRead(out var leftover))
            {
                foreach (var segment in leftover.Buffer)
                {
                    output.Write(segment.Span);
                    boundary.Advance(segment.Span);
                }

                state.FromBackend += leftover.Buffer.Length;
                metrics.BackendToClient(leftover.Buffer.Length);
                backend.Input.AdvanceTo(leftover.Buffer.End);
                var first = await output.FlushAsync(flushCancellation);
                if (first.IsCanceled || first.IsCompleted)
                {
                    return Finished(state, control, first.IsCanceled ? SpliceOutcome.Cancelled : SpliceOutcome.ClientClosed);
                }
            }

            // The hand-over's reader is done: completing it (the stream stays open) lets go of its buffer segments.
            await backend.Input.CompleteAsync();

            var stream = backend.Stream;
            var lastReadFilled = false;
            while (true)
            {
                if (!lastReadFilled)
                {
                    // Wait for data without holding a buffer (idle IDLE sessions cost no memory here).
                    _ = await stream.ReadAsync(Memory<byte>.Empty, CancellationToken.None);
                }

                var memory = output.GetMemory(BackendReadSize);
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
                boundary.Advance(memory.Span[..read]);
                output.Advance(read);
                state.FromBackend += read;
                metrics.BackendToClient(read);
                FlushResult flush;
                try
                {
                    flush = await output.FlushAsync(flushCancellation);
                }
                catch (Exception ex) when (IsConnectionError(ex))
                {
                    return Finished(state, control, SpliceOutcome.ClientError);
                }

                if (flush.IsCanceled)
                {
                    return Finished(state, control, SpliceOutcome.Cancelled);
                }

                if (flush.IsCompleted)
                {
                    return Finished(state, control, SpliceOutcome.ClientClosed);
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
            // Also when something unexpected was thrown: the upstream loop must never be left waiting alone.
            control.Stop();
        }
    }

    /// <summary>The downstream loop's end: recorded, and the upstream loop stopped.</summary>
    private static SpliceOutcome Finished(State state, SpliceControl control, SpliceOutcome outcome)
    {
        state.Finished(outcome);
        control.Stop();
        return outcome;
    }

    private static bool IsConnectionError(Exception ex) =>
        ex is IOException or SocketException or ObjectDisposedException or InvalidOperationException or
            Microsoft.AspNetCore.Connections.ConnectionResetException or Microsoft.AspNetCore.Connections.ConnectionAbortedException;

    /// <summary>What both loops share. Each byte counter is written by one loop only and read after both ended.</summary>
    private sealed class State
    {
        private int _firstSet;

        public long FromClient;
        public long FromBackend;

        public ResponseBoundaryTracker Boundary { get; } = new();

        /// <summary>The outcome of the loop that finished first.</summary>
        public SpliceOutcome First { get; private set; }

        public void Finished(SpliceOutcome outcome)
        {
            if (Interlocked.Exchange(ref _firstSet, 1) == 0)
            {
                First = outcome;
            }
        }
    }
}
