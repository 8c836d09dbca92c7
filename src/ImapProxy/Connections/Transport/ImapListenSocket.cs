using System.Net;
using System.Net.Sockets;
using ImapProxy.Telemetry;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;

namespace ImapProxy.Connections.Transport;

/// <summary>
/// The listening socket of one IMAP listener: accepts client sockets and gives each as a lean
/// <see cref="ImapSocketConnection"/>, whose I/O goes through the socket engine. <see cref="ImapListeners"/> runs the
/// accept loop.
/// </summary>
internal sealed class ImapListenSocket : IDisposable
{
    /// <summary>Pending connections the kernel queues before an accept (Kestrel's default, too).</summary>
    internal const int Backlog = 512;

    private readonly Socket _socket;
    private readonly ISocketEngine _engine;
    private readonly ILogger _logger;
    private volatile bool _unbound;

    private ImapListenSocket(Socket socket, ISocketEngine engine, ILogger logger)
    {
        _socket = socket;
        _engine = engine;
        _logger = logger;
        EndPoint = (IPEndPoint)socket.LocalEndPoint!;
    }

    /// <summary>The bound endpoint (port 0 has become a real port).</summary>
    public IPEndPoint EndPoint { get; }

    /// <summary>Binds and listens; a port in use is an <see cref="AddressInUseException"/>.</summary>
    public static ImapListenSocket Bind(IPEndPoint endpoint, ISocketEngine engine, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (endpoint.Address.Equals(IPAddress.IPv6Any))
            {
                socket.DualMode = true;
            }

            socket.Bind(endpoint);
            socket.Listen(Backlog);
            return new ImapListenSocket(socket, engine, logger);
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            socket.Dispose();
            throw new AddressInUseException(ex.Message, ex);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// One connection, or null once unbound. Failures of one accept are logged and the next is tried; running out of
    /// descriptors pauses accepting briefly instead of spinning.
    /// </summary>
    public async ValueTask<ImapSocketConnection?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        while (true)
        {
            try
            {
                var accepted = await _socket.AcceptAsync(cancellationToken);
                try
                {
                    accepted.NoDelay = true;
                    return new ImapSocketConnection(accepted, _engine);
                }
                catch (Exception ex)
                {
                    // Gone already (NoDelay on a reset socket), or the engine could not take it: this one is lost,
                    // accepting goes on.
                    accepted.Dispose();
                    Log.AcceptFailed(_logger, EndPoint.ToString(), ex is SocketException socketError ? socketError.SocketErrorCode.ToString() : ex.GetType().Name);
                }
            }
            catch (ObjectDisposedException)
            {
                return null;
            }
            catch (OperationCanceledException)
            {
                return null;
            }
            catch (SocketException) when (_unbound)
            {
                return null;
            }
            catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionAborted)
            {
                // The client left before it was accepted.
            }
            catch (SocketException ex)
            {
                Log.AcceptFailed(_logger, EndPoint.ToString(), ex.SocketErrorCode.ToString());
                if (ex.SocketErrorCode is SocketError.TooManyOpenSockets or SocketError.NoBufferSpaceAvailable)
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(100), CancellationToken.None);
                }
            }
        }
    }

    /// <summary>Stops listening: a waiting <see cref="AcceptAsync"/> returns null, and so does every later one.</summary>
    public void Dispose()
    {
        _unbound = true;
        _socket.Dispose();
    }
}
