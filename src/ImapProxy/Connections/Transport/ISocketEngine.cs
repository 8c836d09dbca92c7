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
    /// <summary>A stream over an accepted socket; from now on the engine does all of the socket's I/O.</summary>
    Stream Attach(Socket socket);

    /// <summary>
    /// Connects to <paramref name="host"/> (an address, or a name tried address by address) and returns the socket
    /// and a stream over it. <paramref name="near"/>, a stream of the same session, lets the engine keep both on one
    /// thread. Failures are <see cref="SocketException"/>s.
    /// </summary>
    ValueTask<(Socket Socket, Stream Stream)> ConnectAsync(string host, int port, Stream? near, CancellationToken cancellationToken);
}

/// <summary>A connection stream that can watch for its peer's close without reading (both engines' streams).</summary>
internal interface IPeerCloseWatch
{
    /// <summary>
    /// Waits, without consuming anything, until the peer closes the connection (true) or sends more bytes (false).
    /// Nothing else may be reading meanwhile. Cancelling leaves the connection usable.
    /// </summary>
    Task<bool> WaitForPeerCloseAsync(CancellationToken cancellationToken);
}

/// <summary>.NET's own sockets, through <see cref="SocketStream"/>.</summary>
internal sealed class DotNetSocketEngine : ISocketEngine
{
    public static DotNetSocketEngine Instance { get; } = new();

    public Stream Attach(Socket socket) => new SocketStream(socket);

    public async ValueTask<(Socket Socket, Stream Stream)> ConnectAsync(string host, int port, Stream? near, CancellationToken cancellationToken)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(host, port, cancellationToken);
            return (socket, new SocketStream(socket));
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }
}
