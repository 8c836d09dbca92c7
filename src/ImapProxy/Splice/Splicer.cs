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
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var counters = new Counters();
        var boundary = new ResponseBoundaryTracker();
        var upstream = ClientToBackendAsync(clientInput, backend.Stream, counters, metrics, stop.Token);
        var downstream = BackendToClientAsync(backend, clientOutput, counters, boundary, metrics, stop.Token);

        var first = await Task.WhenAny(upstream, downstream);
        await stop.CancelAsync();
        var results = await Task.WhenAll(upstream, downstream);

        var outcome = cancellationToken.IsCancellationRequested
            ? SpliceOutcome.Cancelled
            : first == upstream ? results[0] : results[1];
        return new SpliceResult(outcome, counters.FromClient, counters.FromBackend, boundary.AtLineStart, boundary.SawBye);
    }

    private static async Task<SpliceOutcome> ClientToBackendAsync(PipeReader input, Stream backend, Counters counters, ImapProxyMetrics metrics, CancellationToken cancellationToken)
    {
        while (true)
        {
            ReadResult result;
            try
            {
                result = await input.ReadAsync(cancellationToken);
            }
            catch (OperationCanceledException)
            {
                return SpliceOutcome.Cancelled;
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
                    await backend.WriteAsync(segment, cancellationToken);
                }

                counters.FromClient += buffer.Length;
                metrics.ClientToBackend(buffer.Length);
            }
            catch (OperationCanceledException)
            {
                return SpliceOutcome.Cancelled;
            }
            catch (Exception ex) when (IsConnectionError(ex))
            {
                return SpliceOutcome.BackendError;
            }
            finally
            {
                input.AdvanceTo(buffer.End);
            }

            if (result.IsCompleted || result.IsCanceled)
            {
                return SpliceOutcome.ClientClosed;
            }
        }
    }

    private static async Task<SpliceOutcome> BackendToClientAsync(BackendConnection backend, PipeWriter output, Counters counters, ResponseBoundaryTracker boundary, ImapProxyMetrics metrics, CancellationToken cancellationToken)
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
                if ((await output.FlushAsync(cancellationToken)).IsCompleted)
                {
                    return SpliceOutcome.ClientClosed;
                }
            }

            var stream = backend.Stream;
            var lastReadFilled = false;
            while (true)
            {
                if (!lastReadFilled)
                {
                    // Wait for data without holding a buffer (idle IDLE sessions cost no memory here).
                    _ = await stream.ReadAsync(Memory<byte>.Empty, cancellationToken);
                }

                var memory = output.GetMemory(BackendReadSize);
                int read;
                try
                {
                    read = await stream.ReadAsync(memory, cancellationToken);
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
                    flush = await output.FlushAsync(cancellationToken);
                }
                catch (Exception ex) when (IsConnectionError(ex))
                {
                    return SpliceOutcome.ClientError;
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

    /// <summary>Each field is written by one loop only and read after both have finished.</summary>
    private sealed class Counters
    {
        public long FromClient;
        public long FromBackend;
    }
}
