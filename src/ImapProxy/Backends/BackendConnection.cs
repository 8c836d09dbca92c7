using System.IO.Pipelines;
using ImapProxy.Connections.Transport;

namespace ImapProxy.Backends;

/// <summary>
/// A logged-in backend connection, ready to be spliced. <see cref="Input"/> may already hold bytes the backend
/// sent after its tagged OK; the splice forwards them before reading <see cref="Stream"/> directly.
/// </summary>
internal sealed class BackendConnection : IAsyncDisposable
{
    /// <summary>
    /// <paramref name="socket"/> is the socket engine's stream (which owns the socket), <paramref name="stream"/> the
    /// same or the TLS stream over it.
    /// </summary>
    public BackendConnection(BackendEndpoint endpoint, ISocketControl socket, Stream stream, PipeReader input)
    {
        Endpoint = endpoint;
        Socket = socket;
        Stream = stream;
        Input = input;
    }

    public BackendEndpoint Endpoint { get; }

    /// <summary>The socket, for shutting it down.</summary>
    public ISocketControl Socket { get; }

    /// <summary>The network stream, or the TLS stream over it.</summary>
    public Stream Stream { get; }

    /// <summary>
    /// The reader used during the hand-over; it does not own <see cref="Stream"/>. Null once the splice has taken
    /// what it held (<see cref="ReleaseInput"/>).
    /// </summary>
    public PipeReader? Input { get; private set; }

    /// <summary>
    /// Completes the hand-over's reader and lets go of it: its segment pool would otherwise stay in memory for the
    /// whole life of the session. The stream stays open.
    /// </summary>
    public void ReleaseInput()
    {
        Input?.Complete();
        Input = null;
    }

    public async ValueTask DisposeAsync()
    {
        ReleaseInput();
        await Stream.DisposeAsync();
        Socket.Dispose();
    }
}
