using System.Buffers;
using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Security.Authentication;
using ImapProxy.Backends;
using ImapProxy.Configuration;
using ImapProxy.Connections.Transport;
using ImapProxy.Directory;
using ImapProxy.Protocol.PreAuth;
using ImapProxy.Protocol.Responses;
using ImapProxy.Protocol.Sasl;
using ImapProxy.Splice;
using ImapProxy.Telemetry;
using ImapProxy.Tls;
using Microsoft.AspNetCore.Connections;

namespace ImapProxy.Connections;

/// <summary>
/// One client connection from greeting to close: the pre-authentication dialogue, the hand-over to the
/// backend and the splice. The session owns everything it creates and releases it in <see cref="EndAsync"/>, once: at
/// the end of <see cref="RunAsync"/>, or at the end of the splice when that outlived it.
/// </summary>
#pragma warning disable CA1001 // The channel is released in EndAsync (or before the splice); nothing outside the session holds it.
internal sealed class ClientSession : ISpliceOwner
{
    private readonly ImapSocketConnection _connection;
    private readonly ListenerOptions _listener;
    private readonly ImapSessionServices _services;
    private readonly IPEndPoint _client;
    private readonly ImapProxyMetrics _metrics;
    private readonly Action<ImapSocketConnection> _ended;
    private string _sessionId = "";
    private Activity? _preAuthActivity;

    // The pre-auth dialogue's I/O on the client stream (the socket's, or _tls). Null once the dialogue is over (the
    // splice reads and writes the client stream itself) and before it begins.
    private PreAuthChannel? _channel;
    private Stream _clientStream; // the client stream: the socket's, or _tls over it
    private Stream? _tls; // implicit TLS or after STARTTLS (TlsServerStream or SslStream); let go of once the splice takes over its record layer
    private TlsRecordLayer? _recordLayer; // the TLS connection, once the splice took it over
    private Stream _clientTransport; // the stream under _tls (the socket's, or a PROXY header's read-ahead before it)
    private bool _tlsUnfinished; // a TLS handshake began and has not succeeded: no plaintext may be written any more
    private string _user = "-"; // as logged (escaped)
    private string _directoryUser = "";
    private DirectorySource _source;
    private string _reason = "client closed";
    private long _started;
    private BackendConnection? _backend; // from the hand-over to the end
    private LiveSession? _live; // from the start of the splice
    private long _spliceStarted;

    /// <param name="ended">Told of the connection when a session that <see cref="RunAsync"/> handed to its splice has ended.</param>
    public ClientSession(ConnectionContext connection, ListenerOptions listener, ImapSessionServices services, Action<ImapSocketConnection> ended)
    {
        // ImapListeners gives only its own connections; any other connection type is a wiring bug.
        _connection = connection as ImapSocketConnection
            ?? throw new InvalidOperationException($"IMAP listener {listener.Name} is not on the IMAP transport ({connection.GetType().Name}).");
        _listener = listener;
        _services = services;
        _client = connection.RemoteEndPoint as IPEndPoint ?? new IPEndPoint(IPAddress.None, 0);
        _clientStream = _connection.Stream;
        _clientTransport = _connection.Stream;
        _metrics = services.Metrics;
        _ended = ended;
    }

    /// <summary>
    /// Runs the session until it ends (false: the caller closes the connection) or its splice has begun (true). A
    /// spliced session then ends by itself: the splice's end runs <see cref="EndAfterSpliceAsync"/>, which reports the
    /// connection to the listener's <c>ended</c> callback. Nothing awaits a spliced session, so its hours of IDLE keep
    /// no async frame of this method or of its caller: 376 bytes less per idle session (heap dumps of 4,000 idle
    /// plain sessions: 1,626 bytes of managed objects each before, 1,250 after).
    /// </summary>
    public async Task<bool> RunAsync()
    {
        _started = Stopwatch.GetTimestamp();

        // The pre-auth span runs from accept to hand-over; its trace id is the session id the backend logs.
        _preAuthActivity = ImapProxyActivities.Source.StartActivity("imap.preauth", ActivityKind.Server);
        _preAuthActivity?.SetTag(ImapProxyMetrics.ListenerTag, _listener.Name).SetTag("client.address", _client.Address.ToString())
            .SetTag("client.port", _client.Port).SetTag("network.transport", "tcp");
        _sessionId = _preAuthActivity?.TraceId.ToHexString() ?? ActivityTraceId.CreateRandom().ToHexString();
        _metrics.ConnectionOpened(_listener.Name, TlsMode);

        var scope = _services.LogScopes.Enabled ? Log.SessionScope(_services.Logger, _sessionId) : null;
        Log.ConnectionAccepted(_services.Logger, _client, _listener.Name);
        try
        {
            _backend = await PreAuthPhaseAsync();
            EndPreAuthSpan(_backend is not null);

            // The log scope (session id on pre-auth log lines) ends with the pre-auth: every later line carries the
            // session id itself, and a scope kept would stay in memory for the whole life of every session.
            scope?.Dispose();
            scope = null;
            if (_backend is not null)
            {
                // From here the splice's end ends the session (SpliceEnded), maybe even before this returns.
                StartSplice(_backend);
                return true;
            }
        }
        catch (Exception ex)
        {
            OnFailure(ex);
        }
        finally
        {
            scope?.Dispose();
        }

        await EndAsync(0, 0);
        return false;
    }

    void ISpliceOwner.TlsTakenOver(TlsRecordLayer recordLayer)
    {
        // The splice reads and writes the connection through its record layer, and so does the BYE after it: the TLS
        // stream is not kept for the session's hours of IDLE. It is disposed now: a TlsServerStream has handed its
        // layer over already; an SslStream (about 0.4 KB with its copy of the options) leaves its connection to the
        // layer's reference until Close, gives back what it rented and leaves no finalization behind.
        _recordLayer = recordLayer;
        _tls!.Dispose();
        _tls = null;
        _clientStream = _clientTransport;
    }

    void ISpliceOwner.SpliceEnded(SpliceResult result, Exception? error) => _ = EndAfterSpliceAsync(result, error);

    /// <summary>
    /// The end of a spliced session: the splice's outcome, the release of everything, and the listener told. Never
    /// throws: nothing awaits it.
    /// </summary>
    private async Task EndAfterSpliceAsync(SpliceResult splice, Exception? spliceError)
    {
        try
        {
            try
            {
                EndLiveSession();
                if (spliceError is not null)
                {
                    OnFailure(spliceError);
                }
                else
                {
                    await EndSpliceAsync(_live!, splice, _spliceStarted);
                }
            }
            catch (Exception ex)
            {
                OnFailure(ex);
            }

            await EndAsync(splice.BytesFromClient, splice.BytesFromBackend);
        }
        catch (Exception ex)
        {
            Log.SessionError(_services.Logger, _client, ex);
        }
        finally
        {
            _ended(_connection);
        }
    }

    private void OnFailure(Exception ex)
    {
        if (ex is OperationCanceledException or IOException or System.Net.Sockets.SocketException or ConnectionResetException or ConnectionAbortedException)
        {
            _reason = "client closed";
            return;
        }

        _reason = "internal error";
        Log.SessionError(_services.Logger, _client, ex);
    }

    /// <summary>Releases what the session holds, then counts and logs its end; the connection itself is the listener's.</summary>
    private async Task EndAsync(long bytesFromClient, long bytesFromBackend)
    {
        try
        {
            EndPreAuthSpan(handedOver: false);
            if (_backend is not null)
            {
                await _backend.DisposeAsync();
            }

            // Whatever is still buffered (a BYE the client never took) is dropped, not written again to a client
            // that may be gone.
            _channel?.Dispose();
            _channel = null;

            _recordLayer?.Close();
            if (_tls is not null)
            {
                await _tls.DisposeAsync();
            }
        }
        finally
        {
            _metrics.ConnectionClosed(_listener.Name);
            Log.SessionEnded(
                _services.Logger,
                _user,
                _client,
                _backend?.Endpoint.Id ?? "-",
                _sessionId,
                _reason,
                bytesFromClient,
                bytesFromBackend,
                Stopwatch.GetElapsedTime(_started).TotalSeconds);
        }
    }

    /// <summary>
    /// Greeting to hand-over. Everything it needs (dialogue state, timers) lives only here, so a spliced session
    /// keeps none of it for its hours of IDLE. Null means the connection ends (logout, timeout, errors).
    /// </summary>
    private async Task<BackendConnection?> PreAuthPhaseAsync()
    {
        var machine = new PreAuthMachine(
            _services.PreAuthSettings,
            tlsActive: _listener.Tls == ListenerTls.Implicit,
            startTlsOffered: _listener.Tls == ListenerTls.StartTls,
            plaintextAllowedWithoutTls: _services.TrustedNetworks.Contains(_client.Address));
        using var preAuthTimeout = new CancellationTokenSource(_services.Options.PreAuth.Timeout, _services.TimeProvider);
        // Reads and writes of the dialogue see a closed client by themselves (the transport reads nothing in the
        // background); only the auth-failure delay watches for the close (see DelayFailureAnswerAsync).
        using var preAuth = CancellationTokenSource.CreateLinkedTokenSource(preAuthTimeout.Token, _services.Shutdown.Stopping);
        try
        {
            // Implicit TLS: the handshake comes first, under the pre-auth timeout as well as its own.
            if (_listener.Tls == ListenerTls.Implicit)
            {
                if (!await StartTlsAsync(preAuth.Token))
                {
                    return null;
                }
            }
            else
            {
                // What a PROXY header's reader read past the header is the dialogue's first input.
                _channel = new PreAuthChannel(_connection.Stream, _connection.ReleaseTransport());
            }

            machine.WriteGreeting(_channel!.Output);
            await _channel.FlushAsync(preAuth.Token);
            return await RunPreAuthAsync(machine, preAuth.Token, preAuthTimeout.Token);
        }
        catch (OperationCanceledException) when (preAuthTimeout.IsCancellationRequested)
        {
            _reason = "pre-auth timeout";
            await TryWriteByeAsync("Disconnected for inactivity.");
            return null;
        }
        catch (OperationCanceledException) when (_services.Shutdown.Stopping.IsCancellationRequested)
        {
            _reason = "shutdown";
            await TryWriteByeAsync("Server shutting down.");
            return null;
        }
        finally
        {
            machine.PendingLogin?.Dispose();
        }
    }

    private string TlsMode => _listener.Tls switch
    {
        ListenerTls.Implicit => "implicit",
        ListenerTls.StartTls => "starttls",
        _ => "none",
    };

    private void EndPreAuthSpan(bool handedOver)
    {
        if (_preAuthActivity is null)
        {
            return;
        }

        if (!handedOver)
        {
            _preAuthActivity.SetTag("imapproxy.preauth.end", _reason);
        }

        _preAuthActivity.Stop();
        _preAuthActivity = null;
    }

    /// <summary>
    /// The logged-in part begins: the session is registered for kicks and the shutdown, counted per backend, and its
    /// client stream spliced with the backend (the dialogue's channel is let go of). Throws only when the splice
    /// could not begin.
    /// </summary>
    private void StartSplice(BackendConnection backend)
    {
        _spliceStarted = Stopwatch.GetTimestamp();
        var live = new LiveSession(_directoryUser, backend.Endpoint, _source, _client, _sessionId, _services.TimeProvider.GetUtcNow());
        _services.Sessions.Add(live);
        Interlocked.MemoryBarrier(); // pairs with the coordinator's cancel-then-sweep: one of the two sees the other
        if (_services.Shutdown.SessionsEnding.IsCancellationRequested)
        {
            // The grace ended while this session was logging in; the coordinator's sweep may have missed it.
            live.EndForShutdown();
        }

        _live = live;
        _metrics.BackendSessionStarted(backend.Endpoint.Id);
        try
        {
            var pipelined = ReleasePreAuthChannel();
            Splicer.Start(_clientStream, _clientTransport, _connection.Socket, pipelined, backend, _metrics, live.Control, this);
        }
        catch
        {
            EndLiveSession();
            throw;
        }
    }

    private void EndLiveSession()
    {
        _services.Sessions.Remove(_live!);
        _metrics.BackendSessionEnded(_backend!.Endpoint.Id);
    }

    /// <summary>After the splice: the kick's BYE, the spread-out close of a dead backend, the end reason.</summary>
    private async Task EndSpliceAsync(LiveSession live, SpliceResult splice, long started)
    {
        if (splice.Outcome == SpliceOutcome.Cancelled)
        {
            _metrics.Kicked(live.KickReason is { } why ? why.Replace(' ', '_') : "shutdown");
            if (splice.AtResponseBoundary)
            {
                // Only between two responses: a BYE inside a FETCH literal would corrupt it.
                await TryWriteByeAsync(live.KickReason is null ? "Server shutting down." : "Session moved, please reconnect.");
            }
        }

        if (splice.Outcome is SpliceOutcome.BackendClosed or SpliceOutcome.BackendError && !splice.BackendSaidBye)
        {
            // The backend died under the session: when it carried thousands, their clients must not all
            // reconnect in the same instant. Hold this close for a random moment of the spread window.
            await Task.Delay(_services.Options.Directory.KickSpread * Random.Shared.NextDouble(), _services.TimeProvider);
        }

        _reason = splice.Outcome switch
        {
            SpliceOutcome.Cancelled => live.KickReason is { } kick ? "kicked: " + kick : "shutdown",
            SpliceOutcome.ClientClosed => "client closed",
            SpliceOutcome.BackendClosed => "backend closed",
            SpliceOutcome.ClientError => "client error",
            _ => "backend error",
        };
        _metrics.SessionEnded(splice.Outcome switch
        {
            SpliceOutcome.Cancelled => live.KickReason is null ? "shutdown" : "kicked",
            SpliceOutcome.ClientClosed => "client_closed",
            SpliceOutcome.BackendClosed => "backend_closed",
            SpliceOutcome.ClientError => "client_error",
            _ => "backend_error",
        }, Stopwatch.GetElapsedTime(started));
    }

    private async Task<BackendConnection?> RunPreAuthAsync(PreAuthMachine machine, CancellationToken cancellationToken, CancellationToken deadline)
    {
        while (true)
        {
            // What was received already is looked at first: commands pipelined behind one answered, or what a PROXY
            // header's reader read past the header.
            var channel = _channel!;
            var buffer = channel.Buffered;
            var reader = new SequenceReader<byte>(buffer);
            var step = machine.Advance(ref reader, channel.Output);

            // Whatever the client sent behind STARTTLS in plaintext is dropped, never executed. Commands pipelined
            // behind LOGIN stay: they run on the backend after the hand-over.
            channel.Consume(step == PreAuthStep.StartTls ? buffer.Length : reader.Consumed);
            await channel.FlushAsync(cancellationToken);
            switch (step)
            {
                case PreAuthStep.NeedMoreInput:
                    if (!await channel.ReadAsync(cancellationToken))
                    {
                        // A command cut short by the close is never run.
                        _reason = "client closed";
                        return null;
                    }

                    break;

                case PreAuthStep.Close:
                    _reason = machine.CloseReason switch
                    {
                        PreAuthCloseReason.Logout => "logout",
                        PreAuthCloseReason.TooManyErrors => "too many errors",
                        _ => "protocol violation",
                    };
                    return null;

                case PreAuthStep.StartTls:
                    if (!await StartTlsAsync(cancellationToken))
                    {
                        return null;
                    }

                    machine.OnTlsEstablished();
                    break;

                case PreAuthStep.Login:
                    var backend = await LoginAsync(machine, cancellationToken, deadline);
                    if (backend is not null)
                    {
                        return backend;
                    }

                    break;
            }
        }
    }

    private async Task<bool> StartTlsAsync(CancellationToken cancellationToken)
    {
        // The plaintext dialogue is done with: after STARTTLS its channel holds nothing (what followed the command was
        // dropped). Before implicit TLS there is none, and a PROXY header's reader may have read the start of the
        // ClientHello.
        var readAhead = _connection.ReleaseTransport();
        if (_listener.Tls != ListenerTls.Implicit)
        {
            readAhead = [];
        }

        _channel?.Dispose();
        _channel = null;
        var server = _services.Certificates.GetServer();
        Stream transport = _connection.Stream;
        Stream? tls = null;
        using var handshakeTimeout = new CancellationTokenSource(_services.Certificates.HandshakeTimeout, _services.TimeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, handshakeTimeout.Token);
        _tlsUnfinished = true;
        try
        {
            if (server.Context is { } context)
            {
                // The proxy's own OpenSSL connection: the read-ahead goes straight into it.
                var own = new TlsServerStream(TlsRecordLayer.Accept(context), transport);
                tls = own;
                await own.AuthenticateAsync(readAhead, linked.Token);
            }
            else
            {
                if (readAhead.Length > 0)
                {
                    transport = new PrefixedStream(readAhead, transport);
                }

                var runtimeTls = new SslStream(transport, leaveInnerStreamOpen: true);
                tls = runtimeTls;
                await runtimeTls.AuthenticateAsServerAsync(server.Options, linked.Token);
            }
        }
        catch (Exception ex) when (ex is AuthenticationException or IOException || (ex is OperationCanceledException && handshakeTimeout.IsCancellationRequested))
        {
            // A client gone mid-handshake is a failed handshake too: the handshake's read sees the end of stream.
            if (tls is not null)
            {
                await tls.DisposeAsync();
            }

            Log.TlsHandshakeFailed(_services.Logger, _client, ex is OperationCanceledException ? "timeout" : ex.GetType().Name);
            _metrics.TlsHandshakeFailed(_listener.Name);
            _reason = "tls handshake failed";
            return false;
        }
        catch (ObjectDisposedException) when (server.Context?.IsClosed == true)
        {
            // The certificate provider let go of its context: the host is shutting down (its services are being
            // disposed) while this connection was still being accepted.
            if (tls is not null)
            {
                await tls.DisposeAsync();
            }

            _reason = "shutdown";
            return false;
        }
        catch
        {
            if (tls is not null)
            {
                await tls.DisposeAsync();
            }

            throw;
        }

        _tlsUnfinished = false;
        _metrics.TlsHandshakeCompleted(_listener.Name, tls is TlsServerStream ownTls ? ownTls.IsResumed : null);
        _services.TlsBuffers.Apply(tls);
        _tls = tls;
        _clientStream = tls;
        _clientTransport = transport;
        _channel = new PreAuthChannel(tls);
        return true;
    }

    /// <summary>
    /// Lets go of the dialogue's channel before the splice (a spliced session keeps none of its buffers), and returns
    /// what the client pipelined behind its login that the channel already holds.
    /// </summary>
    private byte[] ReleasePreAuthChannel()
    {
        Debug.Assert(_channel!.Output.WrittenCount == 0, "the login's answer is flushed before the splice");
        var pipelined = _channel.TakeBuffered();
        _channel.Dispose();
        _channel = null;
        return pipelined;
    }

    private async Task<BackendConnection?> LoginAsync(PreAuthMachine machine, CancellationToken cancellationToken, CancellationToken deadline)
    {
        var request = machine.PendingLogin!;
        var started = Stopwatch.GetTimestamp();
        var mechanism = request.Credentials.Mechanism switch
        {
            LoginMechanism.Plain => "plain",
            LoginMechanism.SaslLogin => "sasl_login",
            _ => "login",
        };
        var user = UserNames.Normalize(request.Credentials.EffectiveUser, _services.Options.Directory.UserNormalization);
        _user = UserNames.ForLog(user, _services.Options.Telemetry.UserNames);
        _directoryUser = user;
        if (_services.Options.Telemetry.UserNames != UserNameLogging.Omitted)
        {
            _preAuthActivity?.SetTag("enduser.id", _user);
        }

        var placement = await FindBackendAsync(user, cancellationToken);
        var login = await LoginToAsync(placement, request, machine, cancellationToken);
        if (login.Outcome == BackendLoginOutcome.ConnectFailed && placement.Backend is not null)
        {
            // Leave the refusing backend out of hashing for a while; a hashed user gets a second chance now,
            // on the backend the view without it picks. A placed user has no other backend.
            _services.Directory.MarkSuspect(placement.Backend.Id);
            _metrics.BackendConnectError(placement.Backend.Id, login.ErrorType ?? "connect");
            if (placement.Source == DirectorySource.Hash)
            {
                Log.BackendSuspected(_services.Logger, placement.Backend.Id, _user);
                var second = await FindBackendAsync(user, cancellationToken);
                if (second.Backend is not null && second.Backend.Id != placement.Backend.Id)
                {
                    placement = second;
                    login = await LoginToAsync(placement, request, machine, cancellationToken);
                }
            }
        }

        if (login.Connection is not null || login.ConnectDuration > TimeSpan.Zero)
        {
            _metrics.LoginPhase("backend_connect", login.ConnectDuration);
            if (login.AuthDuration > TimeSpan.Zero)
            {
                _metrics.LoginPhase("backend_auth", login.AuthDuration);
            }
        }

        var backendId = placement.Backend?.Id ?? "-";
        _preAuthActivity?.SetTag(ImapProxyMetrics.BackendTag, backendId);
        string result;
        switch (login.Outcome)
        {
            case BackendLoginOutcome.Success:
                var connection = login.Connection!;
                _services.Throttle.RecordSuccess(_client.Address, user);
                var output = _channel!.Output;
                ResponseWriter.Write(output, request.Tag);
                ResponseWriter.Write(output, " OK [CAPABILITY "u8);
                ResponseWriter.Write(output, login.Capabilities!);
                ResponseWriter.Write(output, "] Logged in\r\n"u8);
                machine.OnLoginSucceeded().Dispose();
                try
                {
                    // Under the pre-auth deadline only, not the shutdown's start: once its OK is on the way the session
                    // is a logged-in one and gets the shutdown grace. A stop that began just as the OK went out made
                    // this flush throw after writing it, and the client got its OK and then a BYE.
                    await _channel.FlushAsync(deadline);
                }
                catch
                {
                    await connection.DisposeAsync();
                    throw;
                }

                _source = placement.Source;
                _metrics.Login("success", mechanism);
                _metrics.LoginPhase("total", Stopwatch.GetElapsedTime(started));
                _preAuthActivity?.SetTag(ImapProxyMetrics.ResultTag, "success");
                Log.LoginSucceeded(_services.Logger, _user, _client, backendId, Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                return connection;

            case BackendLoginOutcome.AuthenticationFailed:
                result = "auth_failed";
                Log.LoginFailed(_services.Logger, _user, _client, backendId, "authentication failed", login.Detail);
                // The delay grows per (address, user); the dialogue stays usable afterwards.
                var delay = _services.Throttle.RecordFailure(_client.Address, user);
                _metrics.AuthFailureDelayed(delay);
                await DelayFailureAnswerAsync(delay, cancellationToken);
                machine.OnLoginFailed(_channel!.Output, LoginFailure.AuthenticationFailed);
                break;

            case BackendLoginOutcome.Limit:
                result = "limit";
                Log.LoginFailed(_services.Logger, _user, _client, backendId, "limit", login.Detail);
                machine.OnLoginFailed(_channel!.Output, LoginFailure.Limit);
                break;

            case BackendLoginOutcome.ProxyLoop:
                result = "proxy_loop";
                Log.ProxyLoop(_services.Logger, _client);
                machine.OnLoginFailed(_channel!.Output, LoginFailure.Unavailable);
                break;

            default:
                result = "unavailable";
                if (placement.Backend is not null && login.Outcome != BackendLoginOutcome.ConnectFailed)
                {
                    _metrics.BackendConnectError(placement.Backend.Id, login.ErrorType ?? "unavailable");
                }

                Log.BackendUnavailable(_services.Logger, backendId, login.Detail);
                machine.OnLoginFailed(_channel!.Output, LoginFailure.Unavailable);
                break;
        }

        _metrics.Login(result, mechanism);
        _preAuthActivity?.SetTag(ImapProxyMetrics.ResultTag, result);
        await _channel!.FlushAsync(cancellationToken);
        return null;
    }

    private async ValueTask<DirectoryResult> FindBackendAsync(string user, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        using var activity = ImapProxyActivities.Source.StartActivity("imap.directory", ActivityKind.Internal);
        var placement = await _services.Directory.FindBackendAsync(user, cancellationToken);
        _metrics.LoginPhase("directory", Stopwatch.GetElapsedTime(started));
        activity?.SetTag(ImapProxyMetrics.SourceTag, placement.Source.ToString().ToLowerInvariant()).SetTag(ImapProxyMetrics.BackendTag, placement.Backend?.Id);
        if (placement.Backend is null)
        {
            activity?.SetStatus(ActivityStatusCode.Error, placement.Detail);
        }

        return placement;
    }

    private ValueTask<BackendLoginResult> LoginToAsync(DirectoryResult placement, LoginRequest request, PreAuthMachine machine, CancellationToken cancellationToken) =>
        placement.Backend is null
            ? ValueTask.FromResult(new BackendLoginResult(BackendLoginOutcome.Unavailable, null, placement.Detail ?? "no backend available"))
            : _services.Connector.LoginAsync(placement.Backend, request.Credentials, machine.ClientIdentity, new ClientEndpoints(_client, _connection.LocalEndPoint as IPEndPoint ?? new IPEndPoint(IPAddress.None, 0)) { ClientStream = _connection.Stream }, _sessionId, cancellationToken);

    /// <summary>
    /// The delay before a failed login's answer. A client that hangs up meanwhile does not keep its session waiting
    /// it out (password sprays); nothing reads the connection during the delay, so the socket is watched for its close.
    /// </summary>
    private async Task DelayFailureAnswerAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        using var over = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var watch = _connection.WaitForPeerCloseAsync(over.Token);
        var wait = Task.Delay(delay, _services.TimeProvider, over.Token);
        try
        {
            if (await Task.WhenAny(wait, watch) == watch && watch.IsCompletedSuccessfully && watch.Result)
            {
                throw new ConnectionResetException("The client closed the connection during the failure delay.");
            }

            // The client sent more (it is read after the answer) or the delay is over.
            await wait;
        }
        finally
        {
            // The watch's receive must have ended before the dialogue reads the socket again.
            over.Cancel();
            await ((Task)watch).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    private async Task TryWriteByeAsync(string text)
    {
        if (_tlsUnfinished)
        {
            // Timed out or shut down mid-handshake: the client expects TLS records, not a plaintext BYE.
            return;
        }

        try
        {
            // A client that does not read must not hold the session open.
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2), _services.TimeProvider);
            var bye = System.Text.Encoding.ASCII.GetBytes(text);
            if (_channel is not null)
            {
                ResponseWriter.WriteUntaggedStatus(_channel.Output, ImapStatus.Bye, default, bye);
                await _channel.FlushAsync(timeout.Token);
            }
            else
            {
                // After the splice: straight to the client stream, as the splice wrote; or through the TLS record layer
                // the splice took over, encrypted here and sent on the socket under it.
                var buffer = new ArrayBufferWriter<byte>(bye.Length + 8);
                ResponseWriter.WriteUntaggedStatus(buffer, ImapStatus.Bye, default, bye);
                var bytes = buffer.WrittenMemory;
                if (_recordLayer is not null)
                {
                    if (!_recordLayer.Write(bytes.Span))
                    {
                        return;
                    }

                    var records = new byte[_recordLayer.PendingOutput];
                    bytes = records.AsMemory(0, _recordLayer.TakeOutput(records));
                }

                await _clientStream.WriteAsync(bytes, timeout.Token);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or System.Net.Sockets.SocketException or InvalidOperationException or ObjectDisposedException or ConnectionResetException or ConnectionAbortedException)
        {
            // Best effort: the connection is closing anyway.
        }
    }
}
#pragma warning restore CA1001
