using System.Net;
using System.Net.Sockets;
using ImapProxy.Connections.Transport.Epoll;
using ImapProxy.Telemetry;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;

namespace ImapProxy.Connections.Transport;

/// <summary>
/// The listening socket of one IMAP listener: accepts client sockets and gives each to <see cref="ImapListeners"/> as a
/// lean <see cref="ImapSocketConnection"/>, whose I/O goes through the socket engine.
/// </summary>
internal sealed class ImapListenSocket : IDisposable
{
    /// <summary>Pending connections the kernel queues before an accept (Kestrel's default, too).</summary>
    internal const int Backlog = 512;

    private readonly Socket _socket;
    private readonly ISocketEngine _engine;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly bool _wildcard; // bound to every address: each connection's own address is asked for
    private readonly TaskCompletionSource _unboundSignal = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _unbound;
    private EpollAcceptor? _acceptor;

    private ImapListenSocket(Socket socket, ISocketEngine engine, ILogger logger)
    {
        _socket = socket;
        _engine = engine;
        _logger = logger;
        EndPoint = (IPEndPoint)socket.LocalEndPoint!;
        var address = EndPoint.Address.IsIPv4MappedToIPv6 ? EndPoint.Address.MapToIPv4() : EndPoint.Address;
        _wildcard = address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any);
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
    /// Accepts every connection until unbound, giving each to <paramref name="accepted"/>; the task ends once unbound.
    /// With the epoll engine, connections are accepted on its threads (<see cref="EpollAcceptor"/>) and
    /// <paramref name="accepted"/> runs there (its flag true), so it must not block; otherwise an accept loop runs on
    /// the thread pool (the flag false). Once per socket, and not together with <see cref="AcceptAsync"/>.
    /// </summary>
    public Task StartAccepting(Action<ImapSocketConnection, bool> accepted)
    {
        ArgumentNullException.ThrowIfNull(accepted);
        if (_engine is not EpollEngine epoll)
        {
            return Task.Run(async () =>
            {
                while (await AcceptAsync() is { } connection)
                {
                    accepted(connection, false);
                }
            });
        }

        lock (_lock)
        {
            if (_unbound)
            {
                return Task.CompletedTask;
            }

            _acceptor = new EpollAcceptor(
                _socket,
                epoll,
                (socket, remote, _) =>
                {
                    if (Take(socket, remote) is { } connection)
                    {
                        accepted(connection, true);
                    }
                },
                error => Log.AcceptFailed(_logger, EndPoint.ToString(), error.ToString()));
        }

        return _unboundSignal.Task;
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
                if (Take(await _socket.AcceptAsync(cancellationToken)) is { } connection)
                {
                    return connection;
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

    /// <summary>
    /// Stops listening: a waiting <see cref="AcceptAsync"/> returns null, and so does every later one; the task of
    /// <see cref="StartAccepting"/> ends.
    /// </summary>
    public void Dispose()
    {
        lock (_lock)
        {
            _unbound = true;
            _acceptor?.Dispose(); // off the engine's loops before the descriptor closes
        }

        _socket.Dispose();
        _unboundSignal.TrySetResult();
    }

    /// <summary>
    /// A socket the epoll engine accepted as a connection; null (logged) if it is lost already. Its local address is the
    /// listener's (one object for all of them) unless the listener is bound to every address.
    /// </summary>
    private ImapSocketConnection? Take(EpollSocket accepted, IPEndPoint remote)
    {
        try
        {
            return new ImapSocketConnection(new EpollStream(accepted), remote, _wildcard ? accepted.LocalEndPoint() : EndPoint);
        }
        catch (SocketException ex)
        {
            accepted.Dispose();
            Log.AcceptFailed(_logger, EndPoint.ToString(), ex.SocketErrorCode.ToString());
            return null;
        }
    }

    /// <summary>An accepted socket as a connection on the engine; null (logged) if it is lost already.</summary>
    private ImapSocketConnection? Take(Socket accepted)
    {
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
            return null;
        }
    }
}
