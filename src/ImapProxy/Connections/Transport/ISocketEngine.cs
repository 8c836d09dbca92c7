using System.Net;
using System.Net.Sockets;

namespace ImapProxy.Connections.Transport;

/// <summary>
/// How the sockets of IMAP sessions (a client's and its backend's) do their I/O: through the proxy's own epoll
/// engine on Linux (<see cref="Epoll.EpollEngine"/>), or through .NET's sockets (<see cref="DotNetSocketEngine"/>,
/// elsewhere or when configured). The IMAP listeners accept on the epoll engine's threads with the one, through .NET's
/// sockets with the other (<see cref="ImapListenSocket.StartAccepting"/>).
/// </summary>
internal interface ISocketEngine
{
    /// <summary>
    /// A stream over an accepted socket (an <see cref="ISocketControl"/> too); from now on the engine does all of the
    /// socket's I/O, and disposing the stream closes the socket.
    /// </summary>
    Stream Attach(Socket socket);

    /// <summary>
    /// Connects to <paramref name="endpoint"/> and returns a stream over the new socket (an <see cref="ISocketControl"/>
    /// too), which owns it. <paramref name="near"/>, a stream of the same session, lets the engine keep both on one
    /// thread. Failures are <see cref="SocketException"/>s. Names are the caller's to resolve (<c>BackendAddresses</c>).
    /// </summary>
    ValueTask<Stream> ConnectAsync(IPEndPoint endpoint, Stream? near, CancellationToken cancellationToken);
}

/// <summary>
/// What both engines' streams over a connected socket offer besides reading and writing. Such a stream owns its socket:
/// disposing the stream closes it.
/// </summary>
internal interface ISocketControl : IDisposable
{
    /// <summary>
    /// Waits, without consuming anything, until the peer closes the connection (true) or sends more bytes (false).
    /// Nothing else may be reading meanwhile. Cancelling leaves the connection usable.
    /// </summary>
    Task<bool> WaitForPeerCloseAsync(CancellationToken cancellationToken);

    /// <summary>Shuts a direction of the socket down; one already closed, reset or disposed needs nothing more (never throws).</summary>
    void Shutdown(SocketShutdown how);
}

/// <summary>.NET's own sockets, through <see cref="SocketStream"/>.</summary>
internal sealed class DotNetSocketEngine : ISocketEngine
{
    public static DotNetSocketEngine Instance { get; } = new();

    public Stream Attach(Socket socket) => new SocketStream(socket);

    public async ValueTask<Stream> ConnectAsync(IPEndPoint endpoint, Stream? near, CancellationToken cancellationToken)
    {
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(endpoint, cancellationToken);
            return new SocketStream(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }
}
