using System.Buffers;
using System.Security.Authentication;
using ImapProxy.Connections.Transport;

namespace ImapProxy.Tls;

/// <summary>
/// The server side of a client's TLS connection, made from the proxy's own <see cref="TlsServerContext"/> and driven
/// through its <see cref="TlsRecordLayer"/> over the client's transport stream: the handshake
/// (<see cref="AuthenticateAsync"/>), then the pre-auth dialogue's reads and writes. A splice on the epoll engine
/// takes the layer over (<see cref="DetachLayer"/>) and the stream is let go of; other splices read and write through
/// the stream (one read and one write may run at once, as with <see cref="System.Net.Security.SslStream"/>).
/// </summary>
/// <remarks>
/// <para>
/// Ciphertext read from the transport goes into the layer at once: the stream keeps no bytes of its own, and what the
/// client sent behind a record the reader asked for (commands pipelined behind LOGIN) stays in OpenSSL, where the
/// splice finds it (see <see cref="TlsRecordLayer.HasPendingInput"/>). Buffers are rented per read and per write and
/// given back before the call returns: a waiting stream holds none.
/// </para>
/// <para>
/// What OpenSSL wants sent (records, and what a read makes it say: a key update's answer, an alert) goes out in the
/// order it was made, by one sender at a time, which sends all there is before it gives up its turn and looks again
/// after. A read never waits for a write that the client holds up by not reading (it would stall the other direction):
/// what it made OpenSSL say is sent by the read itself when no write is going on, by the write going on otherwise;
/// only when reads have added more than <see cref="ReadBacklogLimit"/> behind such a write does the read wait (a
/// client that asks for key updates and never reads cannot grow the connection's memory without bound). Every call into OpenSSL
/// holds the connection's lock, and <see cref="Dispose(bool)"/> frees the connection under it: a call after that
/// throws <see cref="ObjectDisposedException"/> instead of touching freed memory. Only asynchronous reads and writes
/// are supported.
/// </para>
/// </remarks>
internal sealed class TlsServerStream : AsyncOnlyStream
{
    /// <summary>Ciphertext read size: a full TLS record.</summary>
    private const int ReadSize = 16 * 1024 + 512;

    /// <summary>The most ciphertext taken out of the layer in one piece: a 64 KB write's records and then some.</summary>
    private const int SendSize = 80 * 1024;

    /// <summary>What reads may leave waiting to be sent behind a write that does not progress before they wait too.</summary>
    private const int ReadBacklogLimit = 16 * 1024;

    private readonly Stream _transport;
    private readonly Lock _layerLock = new(); // OpenSSL's connection: one call at a time, and its end
    private readonly SemaphoreSlim _sending = new(1, 1); // the turn to send: one sender at a time, in order
    private TlsRecordLayer? _layer;
    private int _saidBehindWrite; // what reads added to the output while a sender had the turn (under _layerLock)
    private bool _ended; // the client's close_notify, or the end of its transport

    /// <summary>A stream driving <paramref name="layer"/> (which it owns) over <paramref name="transport"/> (which it does not).</summary>
    public TlsServerStream(TlsRecordLayer layer, Stream transport)
    {
        ArgumentNullException.ThrowIfNull(layer);
        ArgumentNullException.ThrowIfNull(transport);
        _layer = layer;
        _transport = transport;
    }

    /// <summary>Whether the handshake resumed an earlier session.</summary>
    public bool IsResumed
    {
        get
        {
            lock (_layerLock)
            {
                return Layer.IsResumed;
            }
        }
    }

    /// <summary>The negotiated protocol ("TLSv1.3").</summary>
    public string Protocol
    {
        get
        {
            lock (_layerLock)
            {
                return Layer.Protocol;
            }
        }
    }

    /// <summary>The connection; the caller holds <see cref="_layerLock"/>.</summary>
    private TlsRecordLayer Layer => _layer ?? throw new ObjectDisposedException(nameof(TlsServerStream));

    /// <summary>
    /// The server side of the handshake. <paramref name="readAhead"/> is ciphertext the client sent that was read
    /// before (behind a PROXY header). Throws <see cref="AuthenticationException"/> when the handshake fails (after
    /// sending OpenSSL's alert, if it made one), <see cref="IOException"/> when the client closes or the transport
    /// fails.
    /// </summary>
    public async Task AuthenticateAsync(ReadOnlyMemory<byte> readAhead, CancellationToken cancellationToken)
    {
        if (!readAhead.IsEmpty && !Feed(readAhead.Span))
        {
            throw new AuthenticationException("TLS handshake failed: OpenSSL took no input.");
        }

        byte[]? buffer = null;
        try
        {
            while (true)
            {
                TlsHandshakeStatus status;
                string? error;
                bool ticketsOnly;
                lock (_layerLock)
                {
                    var layer = Layer;
                    status = layer.Handshake(out error);
                    ticketsOnly = status == TlsHandshakeStatus.Done && layer.IsTls13;
                }

                if (status == TlsHandshakeStatus.Failed)
                {
                    await TrySendAlertAsync(cancellationToken);
                    throw new AuthenticationException("TLS handshake failed: " + error);
                }

                if (ticketsOnly)
                {
                    // What TLS 1.3's last step wants sent is the session tickets, which the client does not wait for:
                    // they go with the first write, the greeting after implicit TLS (one segment and one wake-up of
                    // the client less per login). A read that has to wait for the client sends them first. TLS 1.2's
                    // last step is the server's Finished, which the client does wait for.
                    return;
                }

                await SendAsync(cancellationToken);
                if (status == TlsHandshakeStatus.Done)
                {
                    return;
                }

                buffer ??= ArrayPool<byte>.Shared.Rent(ReadSize);
                var read = await _transport.ReadAsync(buffer, cancellationToken);
                if (read == 0)
                {
                    throw new IOException("The client closed the connection during the TLS handshake.");
                }

                if (!Feed(buffer.AsSpan(0, read)))
                {
                    throw new AuthenticationException("TLS handshake failed: OpenSSL took no input.");
                }
            }
        }
        finally
        {
            if (buffer is not null)
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    /// <summary>
    /// The layer, which the caller owns from here (it frees it with <see cref="TlsRecordLayer.Close"/>); the stream can
    /// no longer be read or written, and disposing it leaves the layer alone. No read or write may be running.
    /// </summary>
    public TlsRecordLayer DetachLayer()
    {
        lock (_layerLock)
        {
            var layer = Layer;
            _layer = null;
            return layer;
        }
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (buffer.IsEmpty)
        {
            // Waits for data without holding a buffer, as the socket's zero-byte read does.
            bool pending;
            lock (_layerLock)
            {
                pending = Layer.HasPendingInput;
            }

            if (!pending && !_ended)
            {
                await SendBeforeWaitingAsync(cancellationToken);
                _ = await _transport.ReadAsync(Memory<byte>.Empty, cancellationToken);
            }

            return 0;
        }

        byte[]? ciphertext = null;
        try
        {
            while (true)
            {
                int read;
                TlsReadStatus status;
                int said;
                lock (_layerLock)
                {
                    var layer = Layer;
                    var before = layer.PendingOutput;
                    read = layer.Read(buffer.Span, out status);
                    said = layer.PendingOutput - before;
                }

                await SayAsync(said, cancellationToken);
                if (read > 0)
                {
                    return read;
                }

                if (status == TlsReadStatus.Closed)
                {
                    _ended = true;
                    return 0;
                }

                if (status == TlsReadStatus.Failed)
                {
                    throw new IOException("TLS: the client sent a bad record or an alert.");
                }

                if (_ended)
                {
                    return 0;
                }

                await SendBeforeWaitingAsync(cancellationToken);
                ciphertext ??= ArrayPool<byte>.Shared.Rent(ReadSize);
                var received = await _transport.ReadAsync(ciphertext, cancellationToken);
                if (received == 0)
                {
                    _ended = true;
                    bool cut;
                    lock (_layerLock)
                    {
                        cut = Layer.PendingInput > 0;
                    }

                    // A close between records ends the stream, as SslStream's does; inside a record it is an error.
                    return cut ? throw new IOException("TLS: the client closed the connection inside a record.") : 0;
                }

                if (!Feed(ciphertext.AsSpan(0, received)))
                {
                    throw new IOException("TLS: OpenSSL took no input.");
                }
            }
        }
        finally
        {
            if (ciphertext is not null)
            {
                ArrayPool<byte>.Shared.Return(ciphertext);
            }
        }
    }

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        await _sending.WaitAsync(cancellationToken);
        bool written;
        try
        {
            lock (_layerLock)
            {
                written = Layer.Write(buffer.Span);
            }
        }
        catch
        {
            _sending.Release();
            throw;
        }

        if (!written)
        {
            _sending.Release();
            throw new IOException("TLS: the data could not be encrypted.");
        }

        await SendTakenAndReleaseAsync(cancellationToken);
    }

    /// <summary>
    /// Frees the connection unless its layer was detached; the transport is the caller's. The turn's semaphore is left
    /// as it is: a sender may still be giving its turn back, and without a wait handle it holds nothing to free.
    /// </summary>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            lock (_layerLock)
            {
                _layer?.Close();
                _layer = null;
            }
        }

        base.Dispose(disposing);
    }

    private bool Feed(ReadOnlySpan<byte> ciphertext)
    {
        lock (_layerLock)
        {
            return Layer.Feed(ciphertext);
        }
    }

    /// <summary>
    /// What a read made OpenSSL say (<paramref name="said"/> bytes), sent now if no write is going on. Otherwise the
    /// write going on sends it (see <see cref="SendTakenAndReleaseAsync"/>), and the read waits for its turn only once
    /// reads have added more than <see cref="ReadBacklogLimit"/> behind it.
    /// </summary>
    private async ValueTask SayAsync(int said, CancellationToken cancellationToken)
    {
        if (said <= 0)
        {
            return;
        }

        if (!_sending.Wait(0, CancellationToken.None))
        {
            bool over;
            lock (_layerLock)
            {
                _saidBehindWrite += said;
                over = _saidBehindWrite > ReadBacklogLimit;
            }

            if (!over)
            {
                return;
            }

            await _sending.WaitAsync(cancellationToken);
        }

        await SendTakenAndReleaseAsync(cancellationToken);
    }

    /// <summary>
    /// Before a read waits for the client, nothing may wait unsent (TLS 1.3's tickets after STARTTLS): sent now, unless
    /// a sender has the turn, which then sends it.
    /// </summary>
    private async ValueTask SendBeforeWaitingAsync(CancellationToken cancellationToken)
    {
        bool waiting;
        lock (_layerLock)
        {
            waiting = Layer.PendingOutput > 0;
        }

        if (waiting && _sending.Wait(0, CancellationToken.None))
        {
            await SendTakenAndReleaseAsync(cancellationToken);
        }
    }

    /// <summary>Sends all there is to send, waiting for the turn first (the handshake's flights).</summary>
    private async Task SendAsync(CancellationToken cancellationToken)
    {
        await _sending.WaitAsync(cancellationToken);
        await SendTakenAndReleaseAsync(cancellationToken);
    }

    /// <summary>
    /// Sends all the ciphertext waiting in the layer, then gives up the turn, which the caller holds; what a read made
    /// OpenSSL say meanwhile (having found the turn taken) is looked for after, and sent too if the turn is free.
    /// </summary>
    private async Task SendTakenAndReleaseAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            try
            {
                await SendTakenAsync(cancellationToken);
            }
            finally
            {
                _sending.Release();
            }

            bool more;
            lock (_layerLock)
            {
                more = _layer is { } layer && layer.PendingOutput > 0;
            }

            if (!more || !_sending.Wait(0, CancellationToken.None))
            {
                return; // nothing, or whoever has the turn now sends it
            }
        }
    }

    /// <summary>Sends all the ciphertext waiting in the layer; the caller has the turn.</summary>
    private async Task SendTakenAsync(CancellationToken cancellationToken)
    {
        byte[]? buffer = null;
        try
        {
            while (true)
            {
                int taken;
                lock (_layerLock)
                {
                    var layer = Layer;
                    var pending = layer.PendingOutput;
                    if (pending == 0)
                    {
                        _saidBehindWrite = 0;
                        return;
                    }

                    buffer ??= ArrayPool<byte>.Shared.Rent(Math.Min(pending, SendSize));
                    taken = layer.TakeOutput(buffer);
                }

                await _transport.WriteAsync(buffer.AsMemory(0, taken), cancellationToken);
            }
        }
        finally
        {
            if (buffer is not null)
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    /// <summary>The failed handshake's alert, if the client is still there to take it (within the handshake's time).</summary>
    private async Task TrySendAlertAsync(CancellationToken cancellationToken)
    {
        try
        {
            await SendAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
        {
            // Gone, or not reading: the handshake fails either way.
        }
    }
}
