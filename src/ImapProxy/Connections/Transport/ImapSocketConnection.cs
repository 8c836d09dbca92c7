using System.Buffers;
using System.Collections;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Features;

namespace ImapProxy.Connections.Transport;

/// <summary>
/// One accepted IMAP client connection as <see cref="ImapListeners"/> hands it to the session: a stream of the
/// <see cref="ISocketEngine"/> that owns the socket, with the pipes of <see cref="Transport"/> created only when
/// something reads or writes through them (the pre-auth dialogue, a PROXY header) and let go of again with
/// <see cref="ReleaseTransport"/>.
/// </summary>
/// <remarks>
/// A <see cref="ConnectionContext"/>, the shape connection middleware (the PROXY header reader) works on. Kestrel's
/// socket transport kept two pipes, a receive loop and a send loop per connection for its whole life, about 3 KB per
/// idle session; a spliced IMAP session needs none of them (the splice reads the socket itself, through zero-byte
/// reads).
/// </remarks>
internal sealed class ImapSocketConnection : ConnectionContext, IFeatureCollection
{
    private static readonly StreamPipeReaderOptions s_readerOptions = new(bufferSize: 4096, minimumReadSize: 1024, leaveOpen: true, useZeroByteReads: true);
    private static readonly StreamPipeWriterOptions s_writerOptions = new(minimumBufferSize: 4096, leaveOpen: true);
    private static readonly ConnectionAbortedException s_disposed = new("The connection is disposed.");
    private static long s_lastId;

    private readonly long _id;
    private string? _connectionId;
    private IDuplexPipe? _transport;
    private IDictionary<object, object?>? _items;
    private CancellationTokenSource? _closed;
    private int _disposed;

    private List<KeyValuePair<Type, object>>? _features;
    private int _revision;

    /// <summary>A connection over <paramref name="socket"/>, whose I/O goes through <paramref name="engine"/>.</summary>
    public ImapSocketConnection(Socket socket, ISocketEngine engine)
    {
        ArgumentNullException.ThrowIfNull(socket);
        ArgumentNullException.ThrowIfNull(engine);

        // Before the engine takes the socket: these can fail (a reset socket), and a failure after Attach would
        // leave the engine's registration behind (the caller disposes only the socket).
        RemoteEndPoint = socket.RemoteEndPoint;
        LocalEndPoint = socket.LocalEndPoint;
        Stream = engine.Attach(socket);
        Socket = (ISocketControl)Stream;
        _id = Interlocked.Increment(ref s_lastId);
    }

    /// <summary>
    /// A connection over <paramref name="stream"/>, a socket engine's stream that owns its socket (the epoll engine
    /// accepts on its own, with no <see cref="System.Net.Sockets.Socket"/> object).
    /// </summary>
    public ImapSocketConnection(Stream stream, EndPoint remoteEndPoint, EndPoint localEndPoint)
    {
        ArgumentNullException.ThrowIfNull(stream);
        Stream = stream;
        Socket = (ISocketControl)stream;
        RemoteEndPoint = remoteEndPoint;
        LocalEndPoint = localEndPoint;
        _id = Interlocked.Increment(ref s_lastId);
    }

    /// <summary>The socket, for shutting it down (it is <see cref="Stream"/> itself).</summary>
    public ISocketControl Socket { get; }

    /// <summary>
    /// The socket as a stream (of the socket engine): what TLS runs over, and what a plaintext session is spliced on.
    /// It owns the socket.
    /// </summary>
    public Stream Stream { get; }

    public override string ConnectionId
    {
        get => _connectionId ??= "imap-" + _id.ToString("x", System.Globalization.CultureInfo.InvariantCulture);
        set => _connectionId = value;
    }

    public override IFeatureCollection Features => this;

    public override IDictionary<object, object?> Items
    {
        get => _items ??= new Dictionary<object, object?>();
        set => _items = value;
    }

    /// <summary>Pipes over <see cref="Stream"/>, created on first use.</summary>
    public override IDuplexPipe Transport
    {
        get => _transport ??= new TransportPipe(PipeReader.Create(Stream, s_readerOptions), PipeWriter.Create(Stream, s_writerOptions));
        set => _transport = value;
    }

    /// <summary>
    /// Fires when the connection is aborted or disposed. A client's own close is seen by whatever reads: nothing
    /// reads in the background here (see <see cref="WaitForPeerCloseAsync"/>).
    /// </summary>
    public override CancellationToken ConnectionClosed
    {
        get => (_closed ??= new CancellationTokenSource()).Token;
        set => throw new NotSupportedException("The connection's closed token is its own.");
    }

    /// <summary>
    /// Completes the pipes of <see cref="Transport"/> (whatever was written through them has been flushed) and lets go
    /// of them; returns what their reader held unconsumed (bytes the client sent ahead). Empty if they never existed.
    /// </summary>
    public byte[] ReleaseTransport()
    {
        if (_transport is not { } transport)
        {
            return [];
        }

        var leftover = Array.Empty<byte>();
        if (transport.Input.TryRead(out var buffered))
        {
            leftover = buffered.Buffer.ToArray();
            transport.Input.AdvanceTo(buffered.Buffer.End);
        }

        transport.Input.Complete();
        transport.Output.Complete();
        _transport = null;
        return leftover;
    }

    /// <summary>
    /// Waits, without reading anything, until the client closes the connection (true) or sends more bytes (false).
    /// Nothing else may be reading the socket meanwhile; cancelling leaves the connection usable.
    /// </summary>
    public Task<bool> WaitForPeerCloseAsync(CancellationToken cancellationToken) => Socket.WaitForPeerCloseAsync(cancellationToken);

    /// <summary>The forced end at shutdown (the host's time is up): pending reads and writes end at once.</summary>
    public override void Abort(ConnectionAbortedException abortReason)
    {
        Socket.Shutdown(SocketShutdown.Both);
        CancelClosed();
    }

    public override ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return base.DisposeAsync();
        }

        if (_transport is { } transport)
        {
            transport.Input.Complete();
            // With an error, so nothing still buffered is written to a client that may be gone.
            transport.Output.Complete(s_disposed);
            _transport = null;
        }

        Stream.Dispose(); // off the socket engine, then closed
        CancelClosed();
        _closed?.Dispose();
        return base.DisposeAsync();
    }

    private void CancelClosed()
    {
        try
        {
            _closed?.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // Disposed concurrently: it fired already.
        }
    }

    // IFeatureCollection: nothing sets a feature on the proxy's own connections; a short list if anything does.

    bool IFeatureCollection.IsReadOnly => false;

    int IFeatureCollection.Revision => _revision;

    object? IFeatureCollection.this[Type key]
    {
        get => GetFeature(key);
        set => SetFeature(key, value);
    }

    TFeature? IFeatureCollection.Get<TFeature>() where TFeature : default => (TFeature?)GetFeature(typeof(TFeature));

    void IFeatureCollection.Set<TFeature>(TFeature? instance) where TFeature : default => SetFeature(typeof(TFeature), instance);

    IEnumerator<KeyValuePair<Type, object>> IEnumerable<KeyValuePair<Type, object>>.GetEnumerator() => (_features ?? []).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => (_features ?? []).GetEnumerator();

    private object? GetFeature(Type key)
    {
        foreach (var (type, feature) in _features ?? [])
        {
            if (type == key)
            {
                return feature;
            }
        }

        return null;
    }

    private void SetFeature(Type key, object? value)
    {
        ArgumentNullException.ThrowIfNull(key);
        _revision++;
        _features?.RemoveAll(pair => pair.Key == key);
        if (value is not null)
        {
            (_features ??= []).Add(new(key, value));
        }
    }

    private sealed record TransportPipe(PipeReader Input, PipeWriter Output) : IDuplexPipe;
}
