using System.Net;
using System.Net.Sockets;
using ImapProxy.Telemetry;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;

namespace ImapProxy.Connections.Transport;

/// <summary>
/// The endpoint of an IMAP listener. Kestrel binds it through <see cref="ImapTransportFactory"/>; every other endpoint
/// of the host (the admin HTTP port) stays on Kestrel's socket transport.
/// </summary>
internal sealed class ImapListenEndPoint(IPAddress address, int port) : IPEndPoint(address, port);

/// <summary>
/// Kestrel's transport for the IMAP listeners: Kestrel still binds them, runs the accept loop, dispatches every
/// connection to the listener's <see cref="ImapConnectionHandler"/>, tracks it and aborts it at shutdown; this
/// transport only accepts sockets and gives each as a lean <see cref="ImapSocketConnection"/>, whose I/O goes
/// through the socket engine.
/// </summary>
internal sealed class ImapTransportFactory(ISocketEngine engine, ILogger<ImapTransportFactory> logger) : IConnectionListenerFactory, IConnectionListenerFactorySelector
{
    /// <summary>Pending connections the kernel queues before an accept (Kestrel's own default).</summary>
    internal const int Backlog = 512;

    public bool CanBind(EndPoint endpoint) => endpoint is ImapListenEndPoint;

    public ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        if (endpoint is not ImapListenEndPoint ip)
        {
            throw new NotSupportedException($"The IMAP transport binds only IMAP listener endpoints, not {endpoint}.");
        }

        var socket = new Socket(ip.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (ip.Address.Equals(IPAddress.IPv6Any))
            {
                socket.DualMode = true;
            }

            socket.Bind(new IPEndPoint(ip.Address, ip.Port));
            socket.Listen(Backlog);
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

        return ValueTask.FromResult<IConnectionListener>(new Listener(socket, engine, logger));
    }

    private sealed class Listener(Socket socket, ISocketEngine engine, ILogger logger) : IConnectionListener
    {
        private volatile bool _unbound;

        public EndPoint EndPoint { get; } = socket.LocalEndPoint!;

        /// <summary>
        /// One connection, or null once unbound. Kestrel ends its accept loop for good on an exception, so failures of
        /// one accept are logged here and the next is tried; running out of descriptors pauses accepting briefly
        /// instead of spinning.
        /// </summary>
        public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
        {
            while (true)
            {
                try
                {
                    var accepted = await socket.AcceptAsync(cancellationToken);
                    try
                    {
                        accepted.NoDelay = true;
                        return new ImapSocketConnection(accepted, engine);
                    }
                    catch (SocketException ex)
                    {
                        // Gone already (NoDelay on a reset socket), or the engine could not take it.
                        accepted.Dispose();
                        Log.AcceptFailed(logger, EndPoint.ToString()!, ex.SocketErrorCode.ToString());
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
                    Log.AcceptFailed(logger, EndPoint.ToString()!, ex.SocketErrorCode.ToString());
                    if (ex.SocketErrorCode is SocketError.TooManyOpenSockets or SocketError.NoBufferSpaceAvailable)
                    {
                        await Task.Delay(TimeSpan.FromMilliseconds(100), CancellationToken.None);
                    }
                }
            }
        }

        public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
        {
            _unbound = true;
            socket.Dispose();
            return ValueTask.CompletedTask;
        }

        public ValueTask DisposeAsync()
        {
            _unbound = true;
            socket.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
