using System.IO.Pipelines;
using System.Net.Sockets;

namespace ImapProxy.Backends;

/// <summary>
/// A logged-in backend connection, ready to be spliced. <see cref="Input"/> may already hold bytes the backend
/// sent after its tagged OK; the splice forwards them before reading <see cref="Stream"/> directly.
/// </summary>
internal sealed class BackendConnection : IAsyncDisposable
{
    public BackendConnection(BackendEndpoint endpoint, Socket socket, Stream stream, PipeReader input, byte[] capabilities)
    {
        Endpoint = endpoint;
        Socket = socket;
        Stream = stream;
        Input = input;
        Capabilities = capabilities;
    }

    public BackendEndpoint Endpoint { get; }

    public Socket Socket { get; }

    /// <summary>The network stream, or the TLS stream over it.</summary>
    public Stream Stream { get; }

    /// <summary>The reader used during the hand-over; it does not own <see cref="Stream"/>.</summary>
    public PipeReader Input { get; }

    /// <summary>The backend's post-login capability list (without the "CAPABILITY" keyword).</summary>
    public byte[] Capabilities { get; }

    public async ValueTask DisposeAsync()
    {
        await Input.CompleteAsync();
        await Stream.DisposeAsync();
        Socket.Dispose();
    }
}
