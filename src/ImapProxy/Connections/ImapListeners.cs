using System.Net;
using ImapProxy.Configuration;
using ImapProxy.Connections.Transport;
using ImapProxy.Telemetry;
using ImapProxy.Tls;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace ImapProxy.Connections;

/// <summary>
/// The IMAP listeners: binds each, accepts its clients and runs one <see cref="ClientSession"/> per connection
/// (behind the PROXY header reader where configured). At shutdown it stops accepting before anything else stops,
/// lets the sessions end as the <see cref="ShutdownCoordinator"/> ends them, and aborts what is left when the host's
/// shutdown time is up.
/// </summary>
/// <remarks>
/// Kestrel serves only the admin endpoint. Its connection dispatch cost every IMAP session about 0.9 KB for its
/// whole life (the connection record, its task and cancellation source, two tracking entries, a logging scope and
/// the execution contexts that carried it), measured with a heap dump of idle sessions. Here a session costs one
/// entry in a set and carries no execution context; once spliced, nothing awaits it (<see cref="ConnectionHandler"/>).
/// <para>
/// With the epoll engine, connections are accepted on its threads (<see cref="Transport.Epoll.EpollAcceptor"/>), and a
/// session of a plaintext or STARTTLS listener starts right there: it writes its greeting and waits for the client,
/// which a fresh socket always waits for (no command can run before the loop gets back to its events). That saves
/// .NET's socket thread and a thread-pool hop per connection: per plain login, 11 context switches became 5 and
/// CPU fell about a fifth (lab, 50 clients). So does a session of an implicit-TLS listener on the proxy's own TLS
/// connections (<see cref="Tls.TlsServerStream"/>): its handshake's steps run on the engine thread in any case (each
/// read's continuation does), and starting there saves the hop (CPU per TLS login over the generator's 0.94 × in
/// lab pairs, lower in 8 of 8). On SslStream such a session starts on the thread pool: a benchmark run measured TLS
/// logins about 10% slower the other way, and a five-pair lab A/B after accepting moved here found no gain either.
/// With .NET's sockets, every session starts on the thread pool.
/// </para>
/// </remarks>
internal sealed class ImapListeners(
    IOptions<ImapProxyOptions> options,
    ImapSessionServices sessionServices,
    ISocketEngine engine,
    ListenerRegistry registry,
    ServerCertificateProvider certificates,
    TimeProvider timeProvider,
    ILoggerFactory loggerFactory) : IHostedLifecycleService, IDisposable
{
    private readonly ILogger _logger = loggerFactory.CreateLogger<ImapListeners>();
    private readonly List<ImapListenSocket> _sockets = [];
    private readonly List<Task> _acceptLoops = [];
    private readonly HashSet<ImapSocketConnection> _open = [];
    private TaskCompletionSource? _drained; // set once stopping with connections still open
    private bool _unbound; // under the lock of _open: no connection is taken on any more

    /// <summary>Connections accepted and not yet ended.</summary>
    public int OpenConnections
    {
        get
        {
            lock (_open)
            {
                return _open.Count;
            }
        }
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var proxy = options.Value;
        certificates.EnsureLoaded(); // a bad certificate stops the start here
        try
        {
            foreach (var listener in proxy.Listeners)
            {
                var socket = ImapListenSocket.Bind(new IPEndPoint(IPAddress.Parse(listener.Address), listener.Port), engine, _logger);
                _sockets.Add(socket);
                registry.Add(listener.Name, socket.EndPoint);
            }
        }
        catch
        {
            Unbind();
            throw;
        }

        // Accept loops (and so every session they start) run with no execution context: nothing of the host's
        // start is carried into sessions, and their awaits capture nothing.
        using (ExecutionContext.SuppressFlow())
        {
            for (var i = 0; i < _sockets.Count; i++)
            {
                var socket = _sockets[i];
                var listener = proxy.Listeners[i];
                var pipeline = CreatePipeline(listener, proxy);
                var startHere = listener.Tls != ListenerTls.Implicit || certificates.GetServer().Context is not null;
                _acceptLoops.Add(socket.StartAccepting((connection, onEngineThread) => Accepted(connection, pipeline, startHere && onEngineThread)));
            }
        }

        return Task.CompletedTask;
    }

    Task IHostedLifecycleService.StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    Task IHostedLifecycleService.StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Before any hosted service stops (the admin endpoint's drain included): no new IMAP connections.</summary>
    Task IHostedLifecycleService.StoppingAsync(CancellationToken cancellationToken)
    {
        Unbind();
        return Task.CompletedTask;
    }

    Task IHostedLifecycleService.StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        Unbind();
        await Task.WhenAll(_acceptLoops).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);

        Task drained;
        lock (_open)
        {
            if (_open.Count == 0)
            {
                return;
            }

            _drained ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            drained = _drained.Task;
        }

        // Pre-auth sessions say BYE as the host stops; spliced ones end after the grace (ShutdownCoordinator).
        try
        {
            await drained.WaitAsync(cancellationToken);
            return;
        }
        catch (OperationCanceledException)
        {
        }

        ImapSocketConnection[] left;
        lock (_open)
        {
            left = [.. _open];
        }

        var aborted = new ConnectionAbortedException("The server is shutting down.");
        foreach (var connection in left)
        {
            connection.Abort(aborted);
        }

        // Aborted reads and writes end at once; what still has not ended a second later is not waited for.
        try
        {
            await drained.WaitAsync(TimeSpan.FromSeconds(1), timeProvider, CancellationToken.None);
        }
        catch (TimeoutException)
        {
            Log.ConnectionsLeftAtShutdown(_logger, OpenConnections);
        }
    }

    private ConnectionHandler CreatePipeline(ListenerOptions listener, ImapProxyOptions proxy)
    {
        Action<ImapSocketConnection> ended = connection => _ = EndConnectionAsync(connection);
        ConnectionHandler session = connection => new ClientSession(connection, listener, sessionServices, ended).RunAsync();
        if (!listener.ProxyProtocol)
        {
            return session;
        }

        // Before TLS: the header comes first on the wire.
        var proxyHeader = new ProxyProtocolMiddleware(listener, proxy.Tls.HandshakeTimeout, timeProvider, loggerFactory.CreateLogger<ProxyProtocolMiddleware>());
        return connection => proxyHeader.InvokeAsync(connection, session);
    }

    public void Dispose() => Unbind();

    private void Accepted(ImapSocketConnection connection, ConnectionHandler pipeline, bool startHere)
    {
        bool taken;
        lock (_open)
        {
            taken = !_unbound;
            if (taken)
            {
                _open.Add(connection);
            }
        }

        if (!taken)
        {
            // Accepted by an engine thread while the listener was being unbound: the stop no longer waits for it.
            // Closed outside the lock and as ServeAsync closes, so a failure is logged, not thrown into the loop.
            _ = CloseAsync(connection);
            return;
        }

        if (startHere)
        {
            _ = ServeAsync(connection, pipeline);
        }
        else
        {
            ThreadPool.UnsafeQueueUserWorkItem(new SessionStart(this, connection, pipeline), preferLocal: false);
        }
    }

    private async Task ServeAsync(ImapSocketConnection connection, ConnectionHandler pipeline)
    {
        var handedOver = false;
        try
        {
            handedOver = await pipeline(connection);
        }
        catch (Exception ex)
        {
            // ClientSession ends on every failure itself; this is a failure around it (the PROXY header reader).
            Log.ConnectionFailed(_logger, connection.RemoteEndPoint?.ToString() ?? "?", ex);
        }
        finally
        {
            if (!handedOver)
            {
                await EndConnectionAsync(connection);
            }
        }
    }

    /// <summary>The connection is closed and no longer waited for at shutdown.</summary>
    private async Task EndConnectionAsync(ImapSocketConnection connection)
    {
        await CloseAsync(connection);
        lock (_open)
        {
            _open.Remove(connection);
            if (_open.Count == 0)
            {
                _drained?.TrySetResult();
            }
        }
    }

    private async Task CloseAsync(ImapSocketConnection connection)
    {
        try
        {
            await connection.DisposeAsync();
        }
        catch (Exception ex)
        {
            Log.ConnectionFailed(_logger, connection.RemoteEndPoint?.ToString() ?? "?", ex);
        }
    }

    /// <summary>A session to start on the thread pool.</summary>
    private sealed class SessionStart(ImapListeners listeners, ImapSocketConnection connection, ConnectionHandler pipeline) : IThreadPoolWorkItem
    {
        public void Execute() => _ = listeners.ServeAsync(connection, pipeline);
    }

    private void Unbind()
    {
        lock (_open)
        {
            _unbound = true;
        }

        foreach (var socket in _sockets)
        {
            socket.Dispose();
        }
    }
}

/// <summary>
/// Serves one accepted connection: false once it is over (the listener closes it), true once its session has been
/// handed to the splice, which then ends it through the callback the session was given.
/// </summary>
internal delegate Task<bool> ConnectionHandler(ImapSocketConnection connection);
