using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net;
using System.Net.Security;
using System.Security.Authentication;
using ImapProxy.Backends;
using ImapProxy.Configuration;
using ImapProxy.Directory;
using ImapProxy.Protocol.PreAuth;
using ImapProxy.Protocol.Responses;
using ImapProxy.Protocol.Sasl;
using ImapProxy.Splice;
using ImapProxy.Telemetry;
using Microsoft.AspNetCore.Connections;

namespace ImapProxy.Connections;

/// <summary>
/// One client connection from greeting to close: the pre-authentication dialogue, the hand-over to the
/// backend and the splice. <see cref="RunAsync"/> owns everything it creates and releases it in one finally.
/// </summary>
internal sealed class ClientSession
{
    private static readonly StreamPipeReaderOptions s_tlsReaderOptions = new(bufferSize: 4096, minimumReadSize: 1024, leaveOpen: true, useZeroByteReads: true);
    private static readonly StreamPipeWriterOptions s_tlsWriterOptions = new(minimumBufferSize: 4096, leaveOpen: true);

    /// <summary>Completes the TLS writer without writing what it still holds (never thrown).</summary>
    private static readonly ConnectionAbortedException s_sessionOver = new("The session is over.");

    private readonly ConnectionContext _connection;
    private readonly ListenerOptions _listener;
    private readonly ImapSessionServices _services;
    private readonly IPEndPoint _client;
    private readonly IPEndPoint _local;
    private readonly ImapProxyMetrics _metrics;
    private string _sessionId = "";
    private Activity? _preAuthActivity;

    private PipeReader _input;
    private PipeWriter _output;
    private SslStream? _tls; // implicit TLS or after STARTTLS; _input and _output are then adapters over it (set aside during the splice)
    private DuplexPipeStream? _tlsTransport; // what _tls runs over
    private bool _tlsUnfinished; // a TLS handshake began and has not succeeded: no plaintext may be written any more
    private string _user = "-"; // as logged (escaped)
    private string _directoryUser = "";
    private DirectorySource _source;
    private string _reason = "client closed";

    public ClientSession(ConnectionContext connection, ListenerOptions listener, ImapSessionServices services)
    {
        _connection = connection;
        _listener = listener;
        _services = services;
        _client = connection.RemoteEndPoint as IPEndPoint ?? new IPEndPoint(IPAddress.None, 0);
        _local = connection.LocalEndPoint as IPEndPoint ?? new IPEndPoint(IPAddress.None, 0);
        _input = connection.Transport.Input;
        _output = connection.Transport.Output;
        _metrics = services.Metrics;
    }

    public async Task RunAsync()
    {
        var started = Stopwatch.GetTimestamp();

        // The pre-auth span runs from accept to hand-over; its trace id is the session id the backend logs.
        _preAuthActivity = ImapProxyActivities.Source.StartActivity("imap.preauth", ActivityKind.Server);
        _preAuthActivity?.SetTag(ImapProxyMetrics.ListenerTag, _listener.Name).SetTag("client.address", _client.Address.ToString())
            .SetTag("client.port", _client.Port).SetTag("network.transport", "tcp");
        _sessionId = _preAuthActivity?.TraceId.ToHexString() ?? ActivityTraceId.CreateRandom().ToHexString();
        _metrics.ConnectionOpened(_listener.Name, TlsMode);

        BackendConnection? backend = null;
        SpliceResult splice = default;
        var scope = Log.SessionScope(_services.Logger, _sessionId);
        Log.ConnectionAccepted(_services.Logger, _client, _listener.Name);
        try
        {
            backend = await PreAuthPhaseAsync();
            EndPreAuthSpan(backend is not null);

            // The log scope (session id on pre-auth log lines) ends with the pre-auth: every later line carries the
            // session id itself, and a scope kept would stay in memory for the whole life of every session.
            scope?.Dispose();
            scope = null;
            if (backend is not null)
            {
                // The splice is awaited in this frame, not in a method of its own: one async frame less per
                // session for its hours of IDLE.
                var spliceStarted = Stopwatch.GetTimestamp();
                var live = StartSplice(backend);
                try
                {
                    if (_tls is null)
                    {
                        splice = await Splicer.RunAsync(_input, _output, backend, _metrics, live.Control);
                    }
                    else
                    {
                        // The TLS stream is spliced directly; its pipe adapters are let go of meanwhile.
                        var pipelined = ReleaseTlsAdapters();
                        try
                        {
                            splice = await Splicer.RunAsync(_tls, _tlsTransport!, pipelined, backend, _metrics, live.Control);
                        }
                        finally
                        {
                            CreateTlsAdapters();
                        }
                    }
                }
                finally
                {
                    _services.Sessions.Remove(live);
                    _metrics.BackendSessionEnded(backend.Endpoint.Id);
                }

                await EndSpliceAsync(live, splice, spliceStarted);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or ConnectionResetException or ConnectionAbortedException)
        {
            _reason = "client closed";
        }
        catch (Exception ex)
        {
            _reason = "internal error";
            Log.SessionError(_services.Logger, _client, ex);
        }
        finally
        {
            try
            {
                scope?.Dispose();
                EndPreAuthSpan(handedOver: false);
                if (backend is not null)
                {
                    await backend.DisposeAsync();
                }

                if (_tls is not null)
                {
                    _input.Complete();

                    // Completed with an error, so whatever is still buffered (a BYE the client never took) is dropped:
                    // a plain completion would write it again, with no timeout, to a client that may be gone.
                    _output.Complete(s_sessionOver);
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
                    backend?.Endpoint.Id ?? "-",
                    _sessionId,
                    _reason,
                    splice.BytesFromClient,
                    splice.BytesFromBackend,
                    Stopwatch.GetElapsedTime(started).TotalSeconds);
            }
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
        // Not linked to the connection's closed token: a registration on it would stay (as the token's registration
        // table and a free node, ~150 bytes) for the whole life of the session. Reads and writes of the dialogue see
        // a closed client by themselves; only the auth-failure delay waits on something else (see LoginAsync).
        using var preAuth = CancellationTokenSource.CreateLinkedTokenSource(preAuthTimeout.Token, _services.Shutdown.Stopping);
        try
        {
            // Implicit TLS: the handshake comes first, under the pre-auth timeout as well as its own.
            if (_listener.Tls == ListenerTls.Implicit && !await StartTlsAsync(preAuth.Token))
            {
                return null;
            }

            machine.WriteGreeting(_output);
            await _output.FlushAsync(preAuth.Token);
            return await RunPreAuthAsync(machine, preAuth.Token);
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
    /// The logged-in part begins: the session is registered for kicks and the shutdown, and counted per backend.
    /// </summary>
    private LiveSession StartSplice(BackendConnection backend)
    {
        var live = new LiveSession(_directoryUser, backend.Endpoint, _source, _client, _sessionId, _services.TimeProvider.GetUtcNow());
        _services.Sessions.Add(live);
        Interlocked.MemoryBarrier(); // pairs with the coordinator's cancel-then-sweep: one of the two sees the other
        if (_services.Shutdown.SessionsEnding.IsCancellationRequested)
        {
            // The grace ended while this session was logging in; the coordinator's sweep may have missed it.
            live.EndForShutdown();
        }

        _metrics.BackendSessionStarted(backend.Endpoint.Id);
        return live;
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

    private async Task<BackendConnection?> RunPreAuthAsync(PreAuthMachine machine, CancellationToken cancellationToken)
    {
        while (true)
        {
            var result = await _input.ReadAsync(cancellationToken);
            var buffer = result.Buffer;
            var reader = new SequenceReader<byte>(buffer);
            var step = machine.Advance(ref reader, _output);
            switch (step)
            {
                case PreAuthStep.StartTls:
                    // Whatever the client sent behind STARTTLS in plaintext is dropped, never executed.
                    _input.AdvanceTo(buffer.End);
                    break;
                case PreAuthStep.NeedMoreInput:
                    _input.AdvanceTo(reader.Position, buffer.End);
                    break;
                default:
                    // Commands pipelined behind LOGIN stay unread: they run on the backend after the hand-over.
                    _input.AdvanceTo(reader.Position);
                    break;
            }

            await _output.FlushAsync(cancellationToken);
            switch (step)
            {
                case PreAuthStep.NeedMoreInput when result.IsCompleted:
                    _reason = "client closed";
                    return null;

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
                    var backend = await LoginAsync(machine, cancellationToken);
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
        var transport = new DuplexPipeStream(_connection.Transport.Input, _connection.Transport.Output);
        var tls = new SslStream(transport, leaveInnerStreamOpen: true);
        using var handshakeTimeout = new CancellationTokenSource(_services.Certificates.HandshakeTimeout, _services.TimeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, handshakeTimeout.Token);
        _tlsUnfinished = true;
        try
        {
            await tls.AuthenticateAsServerAsync(_services.Certificates.GetServerOptions(), linked.Token);
        }
        catch (Exception ex) when (ex is AuthenticationException or IOException || (ex is OperationCanceledException && handshakeTimeout.IsCancellationRequested))
        {
            // A client gone mid-handshake is a failed handshake too: the handshake's read sees the end of stream.
            await tls.DisposeAsync();
            Log.TlsHandshakeFailed(_services.Logger, _client, ex is OperationCanceledException ? "timeout" : ex.GetType().Name);
            _metrics.TlsHandshakeFailed(_listener.Name);
            _reason = "tls handshake failed";
            return false;
        }
        catch
        {
            await tls.DisposeAsync();
            throw;
        }

        _tlsUnfinished = false;
        _services.TlsBuffers.Apply(tls);
        _tls = tls;
        _tlsTransport = transport;
        CreateTlsAdapters();
        return true;
    }

    /// <summary>Pipe adapters over the TLS stream, for the pre-auth dialogue and for a BYE after the splice.</summary>
    private void CreateTlsAdapters()
    {
        _input = PipeReader.Create(_tls!, s_tlsReaderOptions);
        _output = PipeWriter.Create(_tls!, s_tlsWriterOptions);
    }

    /// <summary>
    /// Completes the adapters and lets go of them before the splice (each keeps a token source and a segment pool;
    /// a spliced session keeps neither; nothing touches them until <see cref="CreateTlsAdapters"/> after the splice),
    /// and returns what the client pipelined behind its login that the reader already decrypted.
    /// </summary>
    private byte[] ReleaseTlsAdapters()
    {
        var pipelined = Array.Empty<byte>();
        if (_input.TryRead(out var buffered))
        {
            pipelined = buffered.Buffer.ToArray();
            _input.AdvanceTo(buffered.Buffer.End);
        }

        Debug.Assert(_output.UnflushedBytes == 0, "the login's answer is flushed before the splice");
        _input.Complete();
        _output.Complete();
        _input = null!;
        _output = null!;
        return pipelined;
    }

    private async Task<BackendConnection?> LoginAsync(PreAuthMachine machine, CancellationToken cancellationToken)
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
                ResponseWriter.Write(_output, request.Tag);
                ResponseWriter.Write(_output, " OK [CAPABILITY "u8);
                ResponseWriter.Write(_output, connection.Capabilities);
                ResponseWriter.Write(_output, "] Logged in\r\n"u8);
                machine.OnLoginSucceeded().Dispose();
                try
                {
                    await _output.FlushAsync(cancellationToken);
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
                using (var delayOrGone = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _connection.ConnectionClosed))
                {
                    // A client that hangs up does not keep its session waiting out the delay (password sprays).
                    await Task.Delay(delay, _services.TimeProvider, delayOrGone.Token);
                }

                machine.OnLoginFailed(_output, LoginFailure.AuthenticationFailed);
                break;

            case BackendLoginOutcome.Limit:
                result = "limit";
                Log.LoginFailed(_services.Logger, _user, _client, backendId, "limit", login.Detail);
                machine.OnLoginFailed(_output, LoginFailure.Limit);
                break;

            case BackendLoginOutcome.ProxyLoop:
                result = "proxy_loop";
                Log.ProxyLoop(_services.Logger, _client);
                machine.OnLoginFailed(_output, LoginFailure.Unavailable);
                break;

            default:
                result = "unavailable";
                if (placement.Backend is not null && login.Outcome != BackendLoginOutcome.ConnectFailed)
                {
                    _metrics.BackendConnectError(placement.Backend.Id, login.ErrorType ?? "unavailable");
                }

                Log.BackendUnavailable(_services.Logger, backendId, login.Detail);
                machine.OnLoginFailed(_output, LoginFailure.Unavailable);
                break;
        }

        _metrics.Login(result, mechanism);
        _preAuthActivity?.SetTag(ImapProxyMetrics.ResultTag, result);
        await _output.FlushAsync(cancellationToken);
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

    private Task<BackendLoginResult> LoginToAsync(DirectoryResult placement, LoginRequest request, PreAuthMachine machine, CancellationToken cancellationToken) =>
        placement.Backend is null
            ? Task.FromResult(new BackendLoginResult(BackendLoginOutcome.Unavailable, null, placement.Detail ?? "no backend available"))
            : _services.Connector.LoginAsync(placement.Backend, request.Credentials, machine.ClientIdentity, new ClientEndpoints(_client, _local), _sessionId, cancellationToken);

    private async Task TryWriteByeAsync(string text)
    {
        if (_tlsUnfinished)
        {
            // Timed out or shut down mid-handshake: the client expects TLS records, not a plaintext BYE.
            return;
        }

        try
        {
            ResponseWriter.WriteUntaggedStatus(_output, ImapStatus.Bye, default, System.Text.Encoding.ASCII.GetBytes(text));
            // A client that does not read must not hold the session open.
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2), _services.TimeProvider);
            await _output.FlushAsync(timeout.Token);
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidOperationException or ConnectionResetException or ConnectionAbortedException)
        {
            // Best effort: the connection is closing anyway.
        }
    }
}
