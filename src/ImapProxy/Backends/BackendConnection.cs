using ImapProxy.Connections.Transport;

namespace ImapProxy.Backends;

/// <summary>
/// A logged-in backend connection, ready to be spliced. The hand-over may have received bytes the backend sent after
/// its tagged OK; the splice forwards them (<see cref="TakePending"/>) before reading <see cref="Stream"/> directly.
/// </summary>
internal sealed class BackendConnection : IAsyncDisposable
{
    private byte[] _pending;

    /// <summary>
    /// <paramref name="socket"/> is the socket engine's stream (which owns the socket), <paramref name="stream"/> the
    /// same or the TLS stream over it; <paramref name="pending"/> what was received past the login's answer.
    /// </summary>
    public BackendConnection(BackendEndpoint endpoint, ISocketControl socket, Stream stream, byte[] pending)
    {
        Endpoint = endpoint;
        Socket = socket;
        Stream = stream;
        _pending = pending;
    }

    public BackendEndpoint Endpoint { get; }

    /// <summary>The socket, for shutting it down.</summary>
    public ISocketControl Socket { get; }

    /// <summary>The network stream, or the TLS stream over it.</summary>
    public Stream Stream { get; }

    /// <summary>What the hand-over received past the backend's login answer, once (empty afterwards).</summary>
    public byte[] TakePending()
    {
        var pending = _pending;
        _pending = [];
        return pending;
    }

    public async ValueTask DisposeAsync()
    {
        _pending = [];
        await Stream.DisposeAsync();
        Socket.Dispose();
    }
}
