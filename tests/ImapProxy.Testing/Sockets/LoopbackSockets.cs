using System.Net;
using System.Net.Sockets;

namespace ImapProxy.Testing.Sockets;

/// <summary>Real TCP connections on 127.0.0.1 for tests that need a socket's two ends in process.</summary>
public static class LoopbackSockets
{
    /// <summary>
    /// A connected pair: <c>Connecting</c> is the side that called connect, <c>Accepted</c> the side a listener
    /// accepted (the listener is closed again at once). The caller disposes both. <paramref name="configureConnecting"/>
    /// runs before the connect (e.g. a small receive buffer, which must be set before the window is negotiated).
    /// </summary>
    public static async Task<(Socket Connecting, Socket Accepted)> ConnectPairAsync(Action<Socket>? configureConnecting = null)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var connecting = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            configureConnecting?.Invoke(connecting);
            await connecting.ConnectAsync(listener.LocalEndPoint!);
            return (connecting, await listener.AcceptAsync());
        }
        catch
        {
            connecting.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Until <paramref name="socket"/> has at least <paramref name="count"/> bytes queued for reading (loopback delivers
    /// within the peer's send nearly always, so this rarely loops); a <see cref="TimeoutException"/> after
    /// <paramref name="limit"/>.
    /// </summary>
    public static async Task WaitForAvailableAsync(Socket socket, int count, TimeSpan limit)
    {
        ArgumentNullException.ThrowIfNull(socket);
        var deadline = DateTime.UtcNow + limit;
        while (socket.Available < count)
        {
            if (DateTime.UtcNow >= deadline)
            {
                throw new TimeoutException($"{count} bytes never arrived ({socket.Available} did)");
            }

            await Task.Yield();
        }
    }
}
