using System.Buffers;
using System.Security.Authentication;

namespace ImapProxy.Tls;

/// <summary>
/// The server side of a client's TLS connection, made from the proxy's own <see cref="TlsServerContext"/> and driven
/// through its <see cref="TlsRecordLayer"/> over the client's transport stream: the handshake
/// (<see cref="AuthenticateAsync"/>), then the pre-auth dialogue's reads and writes. A splice on the epoll engine
/// takes the layer over (<see cref="DetachLayer"/>) and the stream is let go of; other splices read and write through
/// the stream (one read and one write may run at once, as with <see cref="System.Net.Security.SslStream"/>).
/// </summary>
/// <remarks>
/// Ciphertext read from the transport goes into the layer at once: the stream keeps no bytes of its own, and what the
/// client sent behind a record the reader asked for (commands pipelined behind LOGIN) stays in OpenSSL, where the
/// splice finds it (see <see cref="TlsRecordLayer.HasPendingInput"/>). Buffers are rented per read and per write and
/// given back before the call returns: a waiting stream holds none. What OpenSSL wants sent (records, and what a
/// read makes it say: a key update's answer, an alert) goes out in the order it was made, one sender at a time, at
/// the latest before a read waits for the client.
/// Only asynchronous reads and writes are supported.
/// </remarks>
internal sealed class TlsServerStream : Stream
{
    /// <summary>Ciphertext read size: a full TLS record.</summary>
    private const int ReadSize = 16 * 1024 + 512;

    /// <summary>The most ciphertext taken out of the layer in one piece.</summary>
    private const int SendSize = 64 * 1024;

    private readonly Stream _transport;
    private readonly Lock _layerLock = new(); // OpenSSL's connection: one call at a time
    private readonly SemaphoreSlim _sending = new(1, 1); // the transport's writes: one sender at a time, in order
    private TlsRecordLayer? _layer;
    private bool _ended; // the client's close_notify, or the end of its transport

    /// <summary>A stream driving <paramref name="layer"/> (which it owns) over <paramref name="transport"/> (which it does not).</summary>
    public TlsServerStream(TlsRecordLayer layer, Stream transport)
    {
        ArgumentNullException.ThrowIfNull(layer);
        ArgumentNullException.ThrowIfNull(transport);
        _layer = layer;
        _transport = transport;
    }

    public override bool CanRead => true;

    public override bool CanWrite => true;

    public override bool CanSeek => false;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    /// <summary>Whether the handshake resumed an earlier session.</summary>
    public bool IsResumed => Layer.IsResumed;

    /// <summary>The negotiated protocol ("TLSv1.3").</summary>
    public string Protocol => Layer.Protocol;

    private TlsRecordLayer Layer => _layer ?? throw new ObjectDisposedException(nameof(TlsServerStream));

    /// <summary>
    /// The server side of the handshake. <paramref name="readAhead"/> is ciphertext the client sent that was read
    /// before (behind a PROXY header). Throws <see cref="AuthenticationException"/> when the handshake fails (after
    /// sending OpenSSL's alert), <see cref="IOException"/> when the client closes or the transport fails.
    /// </summary>
    public async Task AuthenticateAsync(ReadOnlyMemory<byte> readAhead, CancellationToken cancellationToken)
    {
        var layer = Layer;
        if (!readAhead.IsEmpty && !layer.Feed(readAhead.Span))
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
                lock (_layerLock)
                {
                    status = layer.Handshake(out error);
                }

                if (status == TlsHandshakeStatus.Failed)
                {
                    await TrySendAlertAsync(cancellationToken);
                    throw new AuthenticationException("TLS handshake failed: " + error);
                }

                if (status == TlsHandshakeStatus.Done && layer.IsTls13)
                {
                    // What TLS 1.3's last step wants sent is the session tickets, which the client does not wait for:
                    // they go with the first write, the greeting after implicit TLS (one segment and one wake-up of
                    // the client less per login). A read that has to wait for the client sends them first. TLS 1.2's
                    // last step is the server's Finished, which the client does wait for.
                    return;
                }

                await SendPendingAsync(cancellationToken);
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

                if (!layer.Feed(buffer.AsSpan(0, read)))
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
        var layer = Layer;
        _layer = null;
        return layer;
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var layer = Layer;
        if (buffer.IsEmpty)
        {
            // Waits for data without holding a buffer, as the socket's zero-byte read does.
            bool pending;
            bool say;
            lock (_layerLock)
            {
                pending = layer.HasPendingInput;
                say = layer.PendingOutput > 0;
            }

            if (!pending && !_ended)
            {
                if (say)
                {
                    await SendPendingAsync(cancellationToken);
                }

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
                bool say;
                lock (_layerLock)
                {
                    read = layer.Read(buffer.Span, out status);
                    say = layer.PendingOutput > 0;
                }

                if (say)
                {
                    await SendPendingAsync(cancellationToken);
                }

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

                ciphertext ??= ArrayPool<byte>.Shared.Rent(ReadSize);
                var received = await _transport.ReadAsync(ciphertext, cancellationToken);
                if (received == 0)
                {
                    _ended = true;
                    bool cut;
                    lock (_layerLock)
                    {
                        cut = layer.PendingInput > 0;
                    }

                    // A close between records ends the stream, as SslStream's does; inside a record it is an error.
                    return cut ? throw new IOException("TLS: the client closed the connection inside a record.") : 0;
                }

                bool fed;
                lock (_layerLock)
                {
                    fed = layer.Feed(ciphertext.AsSpan(0, received));
                }

                if (!fed)
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
        var layer = Layer;
        await _sending.WaitAsync(cancellationToken);
        try
        {
            bool written;
            lock (_layerLock)
            {
                written = layer.Write(buffer.Span);
            }

            if (!written)
            {
                throw new IOException("TLS: the data could not be encrypted.");
            }

            await SendTakenAsync(layer, cancellationToken);
        }
        finally
        {
            _sending.Release();
        }
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    /// <summary>Nothing to do: every write is sent before it returns.</summary>
    public override void Flush()
    {
    }

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("TlsServerStream reads asynchronously only.");

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("TlsServerStream writes asynchronously only.");

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    /// <summary>Frees the connection unless its layer was detached; the transport is the caller's.</summary>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _layer?.Close();
            _layer = null;
            _sending.Dispose();
        }

        base.Dispose(disposing);
    }

    private async Task SendPendingAsync(CancellationToken cancellationToken)
    {
        var layer = Layer;
        await _sending.WaitAsync(cancellationToken);
        try
        {
            await SendTakenAsync(layer, cancellationToken);
        }
        finally
        {
            _sending.Release();
        }
    }

    /// <summary>Sends all the ciphertext waiting in the layer; the caller holds <see cref="_sending"/>.</summary>
    private async Task SendTakenAsync(TlsRecordLayer layer, CancellationToken cancellationToken)
    {
        byte[]? buffer = null;
        try
        {
            while (true)
            {
                int taken;
                lock (_layerLock)
                {
                    var pending = layer.PendingOutput;
                    if (pending == 0)
                    {
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
            await SendPendingAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
        {
            // Gone, or not reading: the handshake fails either way.
        }
    }
}
