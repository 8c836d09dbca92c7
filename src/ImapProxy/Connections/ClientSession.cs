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

    private readonly ConnectionContext _connection;
    private readonly ListenerOptions _listener;
    private readonly ImapSessionServices _services;
    private readonly IPEndPoint _client;
    private readonly IPEndPoint _local;
    private readonly string _sessionId = ActivityTraceId.CreateRandom().ToHexString();

    private PipeReader _input;
    private PipeWriter _output;
    private SslStream? _startTls;
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
    }

    public async Task RunAsync()
    {
        var started = Stopwatch.GetTimestamp();
        var options = _services.Options;
        var machine = new PreAuthMachine(
            _services.PreAuthSettings,
            tlsActive: _listener.Tls == ListenerTls.Implicit,
            startTlsOffered: _listener.Tls == ListenerTls.StartTls,
            plaintextAllowedWithoutTls: _services.TrustedNetworks.Contains(_client.Address));

        using var preAuthTimeout = new CancellationTokenSource(options.PreAuth.Timeout, _services.TimeProvider);
        using var preAuth = CancellationTokenSource.CreateLinkedTokenSource(preAuthTimeout.Token, _connection.ConnectionClosed, _services.Shutdown.Stopping);
        BackendConnection? backend = null;
        SpliceResult splice = default;
        using var scope = Log.SessionScope(_services.Logger, _sessionId);
        Log.ConnectionAccepted(_services.Logger, _client, _listener.Name);
        try
        {
            machine.WriteGreeting(_output);
            await _output.FlushAsync(preAuth.Token);
            backend = await RunPreAuthAsync(machine, preAuth.Token);
            if (backend is not null)
            {
                using var live = new LiveSession(_directoryUser, backend.Endpoint, _source, _client, _sessionId, _services.TimeProvider.GetUtcNow());
                _services.Sessions.Add(live);
                try
                {
                    using var ending = CancellationTokenSource.CreateLinkedTokenSource(_services.Shutdown.SessionsEnding, live.KickToken);
                    splice = await Splicer.RunAsync(_input, _output, backend, ending.Token);
                }
                finally
                {
                    _services.Sessions.Remove(live);
                }

                if (splice.Outcome == SpliceOutcome.Cancelled && splice.AtResponseBoundary)
                {
                    // Only between two responses: a BYE inside a FETCH literal would corrupt it.
                    await TryWriteByeAsync(live.KickReason is null ? "Server shutting down." : "Session moved, please reconnect.");
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
            }
        }
        catch (OperationCanceledException) when (preAuthTimeout.IsCancellationRequested)
        {
            _reason = "pre-auth timeout";
            await TryWriteByeAsync("Disconnected for inactivity.");
        }
        catch (OperationCanceledException) when (_services.Shutdown.Stopping.IsCancellationRequested)
        {
            _reason = "shutdown";
            await TryWriteByeAsync("Server shutting down.");
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
            machine.PendingLogin?.Dispose();
            if (backend is not null)
            {
                await backend.DisposeAsync();
            }

            if (_startTls is not null)
            {
                await _input.CompleteAsync();
                await _output.CompleteAsync();
                await _startTls.DisposeAsync();
            }

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
        var tls = new SslStream(new DuplexPipeStream(_input, _output), leaveInnerStreamOpen: true);
        using var handshakeTimeout = new CancellationTokenSource(_services.Certificates.HandshakeTimeout, _services.TimeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, handshakeTimeout.Token);
        try
        {
            await tls.AuthenticateAsServerAsync(_services.Certificates.GetServerOptions(), linked.Token);
        }
        catch (Exception ex) when (ex is AuthenticationException or IOException || (ex is OperationCanceledException && handshakeTimeout.IsCancellationRequested))
        {
            await tls.DisposeAsync();
            Log.TlsHandshakeFailed(_services.Logger, _client, ex is OperationCanceledException ? "timeout" : ex.GetType().Name);
            _reason = "tls handshake failed";
            return false;
        }
        catch
        {
            await tls.DisposeAsync();
            throw;
        }

        _startTls = tls;
        _input = PipeReader.Create(tls, s_tlsReaderOptions);
        _output = PipeWriter.Create(tls, s_tlsWriterOptions);
        return true;
    }

    private async Task<BackendConnection?> LoginAsync(PreAuthMachine machine, CancellationToken cancellationToken)
    {
        var request = machine.PendingLogin!;
        var started = Stopwatch.GetTimestamp();
        var user = UserNames.Normalize(request.Credentials.EffectiveUser, _services.Options.Directory.UserNormalization);
        _user = UserNames.ForLog(user);
        _directoryUser = user;

        var placement = await _services.Directory.FindBackendAsync(user, cancellationToken);
        var login = await LoginToAsync(placement, request, machine, cancellationToken);
        if (login.Outcome == BackendLoginOutcome.ConnectFailed && placement.Backend is not null)
        {
            // Leave the refusing backend out of hashing for a while; a hashed user gets a second chance now,
            // on the backend the view without it picks. A placed user has no other backend.
            _services.Directory.MarkSuspect(placement.Backend.Id);
            if (placement.Source == DirectorySource.Hash)
            {
                Log.BackendSuspected(_services.Logger, placement.Backend.Id, _user);
                var second = await _services.Directory.FindBackendAsync(user, cancellationToken);
                if (second.Backend is not null && second.Backend.Id != placement.Backend.Id)
                {
                    placement = second;
                    login = await LoginToAsync(placement, request, machine, cancellationToken);
                }
            }
        }

        var backendId = placement.Backend?.Id ?? "-";
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
                Log.LoginSucceeded(_services.Logger, _user, _client, backendId, Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                return connection;

            case BackendLoginOutcome.AuthenticationFailed:
                Log.LoginFailed(_services.Logger, _user, _client, backendId, "authentication failed", login.Detail);
                // The delay grows per (address, user); the dialogue stays usable afterwards.
                await Task.Delay(_services.Throttle.RecordFailure(_client.Address, user), _services.TimeProvider, cancellationToken);
                machine.OnLoginFailed(_output, LoginFailure.AuthenticationFailed);
                break;

            case BackendLoginOutcome.Limit:
                Log.LoginFailed(_services.Logger, _user, _client, backendId, "limit", login.Detail);
                machine.OnLoginFailed(_output, LoginFailure.Limit);
                break;

            case BackendLoginOutcome.ProxyLoop:
                Log.ProxyLoop(_services.Logger, _client);
                machine.OnLoginFailed(_output, LoginFailure.Unavailable);
                break;

            default:
                Log.BackendUnavailable(_services.Logger, backendId, login.Detail);
                machine.OnLoginFailed(_output, LoginFailure.Unavailable);
                break;
        }

        await _output.FlushAsync(cancellationToken);
        return null;
    }

    private Task<BackendLoginResult> LoginToAsync(DirectoryResult placement, LoginRequest request, PreAuthMachine machine, CancellationToken cancellationToken) =>
        placement.Backend is null
            ? Task.FromResult(new BackendLoginResult(BackendLoginOutcome.Unavailable, null, placement.Detail ?? "no backend available"))
            : _services.Connector.LoginAsync(placement.Backend, request.Credentials, machine.ClientIdentity, new ClientEndpoints(_client, _local), _sessionId, cancellationToken);

    private async Task TryWriteByeAsync(string text)
    {
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
