using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using ImapProxy.Backends;
using ImapProxy.Protocol.Responses;
using ImapProxy.Telemetry;

namespace ImapProxy.Splice;

/// <summary>
/// Copies bytes both ways between a logged-in client and its backend until one side ends. Two loops; the first
/// to finish cancels the other and both are awaited before anything is disposed. Idle sessions hold no buffers:
/// the client side rests in the transport's own zero-byte read, the backend side in a zero-byte read on its stream.
/// </summary>
internal static class Splicer
{
    /// <summary>Read size for backend data; large FETCH bodies move in these steps.</summary>
    private const int BackendReadSize = 16 * 1024;

    public static async Task<SpliceResult> RunAsync(PipeReader clientInput, PipeWriter clientOutput, BackendConnection backend, ImapProxyMetrics metrics, CancellationToken cancellationToken)
    {
        var counters = new Counters();
        var boundary = new ResponseBoundaryTracker();
        var upstream = ClientToBackendAsync(clientInput, backend.Stream, counters, metrics);
        var downstream = BackendToClientAsync(backend, clientOutput, counters, boundary, metrics, cancellationToken);

        // Loops are stopped without exceptions (the session's end is an outcome, and thousands of sessions ending
        // at once must not cost thousands of throws): the client read and flush are cancelled through the pipe,
        // the backend read ends because the backend socket is shut down. Only a flush stuck on a client that does
        // not read is cancelled by the token (CancelPendingFlush would also cancel the flush of the BYE that follows).
        var stopper = new Stopper(clientInput, backend);
        Task first;
        using (cancellationToken.UnsafeRegister(static state => ((Stopper)state!).Stop(), stopper))
        {
            first = await Task.WhenAny(upstream, downstream);
            stopper.Stop();
            await Task.WhenAll(upstream, downstream);
        }

        var outcome = cancellationToken.IsCancellationRequested ? SpliceOutcome.Cancelled : await (Task<SpliceOutcome>)first;
        return new SpliceResult(outcome, counters.FromClient, counters.FromBackend, boundary.AtLineStart, boundary.SawBye);
    }

    private static async Task<SpliceOutcome> ClientToBackendAsync(PipeReader input, Stream backend, Counters counters, ImapProxyMetrics metrics)
    {
        while (true)
        {
            ReadResult result;
            try
            {
                result = await input.ReadAsync();
            }
            catch (Exception ex) when (IsConnectionError(ex))
            {
                return SpliceOutcome.ClientError;
            }

            var buffer = result.Buffer;
            try
            {
                foreach (var segment in buffer)
                {
                    await backend.WriteAsync(segment);
                }

                counters.FromClient += buffer.Length;
                metrics.ClientToBackend(buffer.Length);
            }
            catch (Exception ex) when (IsConnectionError(ex))
            {
                return SpliceOutcome.BackendError;
            }
            finally
            {
                input.AdvanceTo(buffer.End);
            }

            if (result.IsCanceled)
            {
                return SpliceOutcome.Cancelled;
            }

            if (result.IsCompleted)
            {
                return SpliceOutcome.ClientClosed;
            }
        }
    }

    private static async Task<SpliceOutcome> BackendToClientAsync(BackendConnection backend, PipeWriter output, Counters counters, ResponseBoundaryTracker boundary, ImapProxyMetrics metrics, CancellationToken flushCancellation)
    {
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

                counters.FromBackend += leftover.Buffer.Length;
                metrics.BackendToClient(leftover.Buffer.Length);
                backend.Input.AdvanceTo(leftover.Buffer.End);
                var first = await output.FlushAsync(flushCancellation);
                if (first.IsCanceled || first.IsCompleted)
                {
                    return first.IsCanceled ? SpliceOutcome.Cancelled : SpliceOutcome.ClientClosed;
                }
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

                var memory = output.GetMemory(BackendReadSize);
                int read;
                try
                {
                    read = await stream.ReadAsync(memory, CancellationToken.None);
                }
                catch (Exception ex) when (IsConnectionError(ex))
                {
                    return SpliceOutcome.BackendError;
                }

                if (read == 0)
                {
                    return SpliceOutcome.BackendClosed;
                }

                lastReadFilled = read == memory.Length;
                boundary.Advance(memory.Span[..read]);
                output.Advance(read);
                counters.FromBackend += read;
                metrics.BackendToClient(read);
                FlushResult flush;
                try
                {
                    flush = await output.FlushAsync(flushCancellation);
                }
                catch (Exception ex) when (IsConnectionError(ex))
                {
                    return SpliceOutcome.ClientError;
                }

                if (flush.IsCanceled)
                {
                    return SpliceOutcome.Cancelled;
                }

                if (flush.IsCompleted)
                {
                    return SpliceOutcome.ClientClosed;
                }
            }
        }
        catch (OperationCanceledException)
        {
            return SpliceOutcome.Cancelled;
        }
        catch (Exception ex) when (IsConnectionError(ex))
        {
            return SpliceOutcome.BackendError;
        }
    }

    private static bool IsConnectionError(Exception ex) =>
        ex is IOException or SocketException or ObjectDisposedException or InvalidOperationException or
            Microsoft.AspNetCore.Connections.ConnectionResetException or Microsoft.AspNetCore.Connections.ConnectionAbortedException;

    /// <summary>Ends both loops, once; safe to call from the kick or shutdown callback and from the splice itself.</summary>
    private sealed class Stopper(PipeReader clientInput, BackendConnection backend)
    {
        private int _stopped;

        public void Stop()
        {
            if (Interlocked.Exchange(ref _stopped, 1) != 0)
            {
                return;
            }

            clientInput.CancelPendingRead();
            try
            {
                // A pending receive on the backend then completes with 0 bytes; nothing more is sent.
                backend.Socket.Shutdown(SocketShutdown.Both);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                // Already closed by the peer or disposed: the loop has ended or is ending anyway.
            }
        }
    }

    /// <summary>Each field is written by one loop only and read after both have finished.</summary>
    private sealed class Counters
    {
        public long FromClient;
        public long FromBackend;
    }
}
