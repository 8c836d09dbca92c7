using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using ImapProxy.Configuration;
using ImapProxy.Connections.Transport;
using ImapProxy.Connections.Transport.Epoll;
using ImapProxy.Protocol.PreAuth;
using ImapProxy.Protocol.Sasl;
using ImapProxy.Telemetry;
using ImapProxy.Tls;
using Microsoft.Extensions.Options;

namespace ImapProxy.Backends;

internal enum BackendLoginOutcome
{
    Success,
    AuthenticationFailed,
    Unavailable,
    Limit,
    /// <summary>The hop limit (x-proxy-ttl) is exhausted: a proxy loop.</summary>
    ProxyLoop,
    /// <summary>No TCP connection could be made (refused, unreachable, connect timeout): the backend is suspect.</summary>
    ConnectFailed,
}

/// <summary>
/// The result of a hand-over. <see cref="Detail"/> is for logs: never credentials, never backend text.
/// <see cref="ErrorType"/> is a bounded label for metrics; the durations split the hand-over into its connect
/// phase (TCP, TLS, greeting, capabilities) and its authentication phase (ID, login, capabilities).
/// </summary>
internal readonly record struct BackendLoginResult(BackendLoginOutcome Outcome, BackendConnection? Connection, string Detail)
{
    public string? ErrorType { get; init; }

    /// <summary>
    /// On success, the backend's post-login capability list (without the "CAPABILITY" keyword), for the client's
    /// tagged OK. Not kept on the connection: a spliced session has no further use for it.
    /// </summary>
    public byte[]? Capabilities { get; init; }

    public TimeSpan ConnectDuration { get; init; }

    public TimeSpan AuthDuration { get; init; }
}

/// <summary>Who the client is, for ID forwarding and the PROXY header.</summary>
internal sealed record ClientEndpoints(IPEndPoint Client, IPEndPoint Local)
{
    /// <summary>The client's connection: the backend connection joins its socket engine thread.</summary>
    public Stream? ClientStream { get; init; }
}

/// <summary>
/// The hand-over of DESIGN §5: connect, greeting, optional TLS, ID with the client's details, authentication
/// with the client's credentials, post-login capabilities. Every failure becomes an outcome, never an exception,
/// except cancellation by the caller.
/// </summary>
internal sealed class BackendConnector
{
    private readonly BackendsOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly X509Certificate2Collection? _trustedRoots;
    private readonly BackendDialogueSettings _dialogue;
    private readonly TlsBufferPolicy _tlsBuffers;
    private readonly ISocketEngine _sockets;
    private readonly BackendAddresses _addresses;

    /// <summary>
    /// A connector; <paramref name="lookUp"/> stands in for the system's resolver of backends' host names in tests
    /// (see <see cref="BackendAddresses"/>).
    /// </summary>
    public BackendConnector(IOptions<ImapProxyOptions> options, TimeProvider timeProvider, TlsBufferPolicy tlsBuffers, ISocketEngine sockets, Func<string, CancellationToken, Task<IPAddress[]>>? lookUp = null)
    {
        _options = options.Value.Backends;
        _timeProvider = timeProvider;
        _tlsBuffers = tlsBuffers;
        _sockets = sockets;
        _addresses = new BackendAddresses(timeProvider, _options.DnsRefresh, lookUp);
        if (_options.CaFile is not null)
        {
            _trustedRoots = [];
            _trustedRoots.ImportFromPemFile(_options.CaFile);
        }

        _dialogue = _options.MasterUser is not null && _options.MasterPasswordFile is not null
            ? new(_options.ForwardClientId, Encoding.UTF8.GetBytes(_options.MasterUser), Encoding.UTF8.GetBytes(File.ReadAllText(_options.MasterPasswordFile).TrimEnd('\r', '\n')))
            : new(_options.ForwardClientId, null, null);
    }

    /// <summary>
    /// Connects to <paramref name="backend"/> and logs in with the client's credentials. A plaintext backend (at an
    /// address, or at one its name resolved to: <see cref="LoginByNameAsync"/>), for a client of the epoll engine, is
    /// handed over by that client's engine thread alone (<see cref="EpollBackendLogin"/>: no asynchronous step between
    /// the connect and the login's answer); any other through <see cref="LoginStreamAsync"/>. Both speak through a
    /// <see cref="BackendLoginDialogue"/>.
    /// </summary>
    public ValueTask<BackendLoginResult> LoginAsync(
        BackendEndpoint backend,
        ImapCredentials credentials,
        ClientIdentity clientIdentity,
        ClientEndpoints endpoints,
        string sessionId,
        CancellationToken cancellationToken)
    {
        var ttl = IncomingTtl(clientIdentity) ?? _options.ProxyTtl;
        if (ttl <= 0)
        {
            return new(new BackendLoginResult(BackendLoginOutcome.ProxyLoop, null, "x-proxy-ttl exhausted"));
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<BackendLoginResult>(cancellationToken);
        }

        return backend.Address is { } address
            ? LoginAt(backend, address, credentials, clientIdentity, endpoints, sessionId, ttl, cancellationToken)
            : LoginByNameAsync(backend, credentials, clientIdentity, endpoints, sessionId, ttl, cancellationToken);
    }

    /// <summary>One hand-over to <paramref name="address"/>, <paramref name="backend"/>'s or one its name resolved to.</summary>
    private ValueTask<BackendLoginResult> LoginAt(
        BackendEndpoint backend,
        IPEndPoint address,
        ImapCredentials credentials,
        ClientIdentity clientIdentity,
        ClientEndpoints endpoints,
        string sessionId,
        int ttl,
        CancellationToken cancellationToken)
    {
        var dialogue = new BackendLoginDialogue(_dialogue, backend, credentials, clientIdentity, endpoints, sessionId, ttl);
        var phases = new HandoverPhases(_timeProvider, backend);
        if (backend.Tls == BackendTls.None && endpoints.ClientStream is EpollStream near && _sockets is EpollEngine)
        {
            return new EpollBackendLogin(near.Socket.Loop, _options, _timeProvider, dialogue, phases, credentials.Mechanism, address, endpoints)
                .Start(cancellationToken);
        }

        return LoginStreamAsync(dialogue, phases, backend, address, credentials.Mechanism, endpoints, cancellationToken);
    }

    /// <summary>
    /// A backend given by name: its addresses (<see cref="BackendAddresses"/>: in memory, looked up again in the
    /// background once older than <c>Backends:DnsRefresh</c>), each tried in turn until one takes a connection, and no
    /// further one once the attempts have taken the connect's limit. When none does, the name is looked up afresh at the
    /// next login (the pods behind it may have moved). The lookup a login has to wait for is bounded by the connect's
    /// limit too. The hand-over's durations and spans are those of the last attempt.
    /// </summary>
    private async ValueTask<BackendLoginResult> LoginByNameAsync(
        BackendEndpoint backend,
        ImapCredentials credentials,
        ClientIdentity clientIdentity,
        ClientEndpoints endpoints,
        string sessionId,
        int ttl,
        CancellationToken cancellationToken)
    {
        IPAddress[] addresses;
        try
        {
            addresses = await _addresses.ResolveAsync(backend.Host, _options.ConnectTimeout, cancellationToken);
        }
        catch (SocketException ex)
        {
            return new(BackendLoginOutcome.ConnectFailed, null, "name lookup failed: " + ex.SocketErrorCode) { ErrorType = "dns" };
        }
        catch (TimeoutException)
        {
            return new(BackendLoginOutcome.ConnectFailed, null, "name lookup timed out") { ErrorType = "dns" };
        }

        BackendLoginResult result = default;
        var started = _timeProvider.GetTimestamp();
        foreach (var address in addresses)
        {
            result = await LoginAt(backend, new IPEndPoint(address, backend.Port), credentials, clientIdentity, endpoints, sessionId, ttl, cancellationToken);
            if (result.Outcome != BackendLoginOutcome.ConnectFailed || _timeProvider.GetElapsedTime(started) >= _options.ConnectTimeout)
            {
                break;
            }
        }

        if (result.Outcome == BackendLoginOutcome.ConnectFailed)
        {
            _addresses.Forget(backend.Host, addresses);
        }

        return result;
    }

    /// <summary>The hand-over through the socket engine's streams: any backend, TLS included.</summary>
    private async ValueTask<BackendLoginResult> LoginStreamAsync(
        BackendLoginDialogue dialogue,
        HandoverPhases phases,
        BackendEndpoint backend,
        IPEndPoint address,
        LoginMechanism mechanism,
        ClientEndpoints endpoints,
        CancellationToken cancellationToken)
    {
        // One source and one timer for the whole hand-over, armed with the connect's limit until connected, then with
        // what is left of the login's (a source per limit, each linked with the caller's token, made four sources, two
        // timers and four registrations per login).
        var started = _timeProvider.GetTimestamp();
        using var timeout = new CancellationTokenSource(_options.ConnectTimeout < _options.LoginTimeout ? _options.ConnectTimeout : _options.LoginTimeout, _timeProvider);
        using var caller = cancellationToken.UnsafeRegister(static state => ((CancellationTokenSource)state!).Cancel(), timeout);
        var reader = new BackendLineReader(_options.MaxResponseLine);
        Stream? socketStream = null;
        Stream? stream = null;
        try
        {
            var token = timeout.Token;
            socketStream = await _sockets.ConnectAsync(address, endpoints.ClientStream, token);
            stream = socketStream;
            var left = _options.LoginTimeout - _timeProvider.GetElapsedTime(started);
            timeout.CancelAfter(left > TimeSpan.Zero ? left : TimeSpan.Zero);
            if (backend.ProxyProtocol)
            {
                await stream.WriteAsync(ProxyProtocolHeader.CreateV2(endpoints.Client, endpoints.Local), token);
            }

            if (backend.Tls == BackendTls.Implicit)
            {
                stream = await WrapTlsAsync(stream, backend, token);
            }

            var step = BackendStep.ReadLine;
            while (step != BackendStep.Done)
            {
                switch (step)
                {
                    case BackendStep.Send:
                        await stream.WriteAsync(dialogue.Output.WrittenMemory, token);
                        await stream.FlushAsync(token);
                        dialogue.Output.Clear(); // zeroed: it held credentials
                        step = BackendStep.ReadLine;
                        break;

                    case BackendStep.StartTls:
                        // Nothing may follow the OK before the handshake (the mirror of the rule the proxy enforces itself).
                        if (!reader.Pending.IsEmpty)
                        {
                            step = dialogue.OnBroken("backend sent data after STARTTLS OK");
                            break;
                        }

                        stream = await WrapTlsAsync(stream, backend, token);
                        step = dialogue.OnTlsEstablished();
                        break;

                    default:
                        if (HandoverPhases.TryFeed(reader, dialogue, phases, mechanism) is { } next)
                        {
                            step = next;
                            break;
                        }

                        var read = await stream.ReadAsync(reader.GetReceiveSpace(), token);
                        if (read == 0)
                        {
                            step = dialogue.OnBroken("backend closed the connection during login");
                        }
                        else
                        {
                            reader.Received(read);
                        }

                        break;
                }
            }

            if (dialogue.Outcome != BackendLoginOutcome.Success)
            {
                await DisposeAsync(stream, socketStream);
                return phases.End(new(dialogue.Outcome, null, dialogue.Detail) { ErrorType = dialogue.ErrorType });
            }

            var connection = new BackendConnection(backend, (ISocketControl)socketStream, stream, reader.Pending.ToArray());
            return phases.End(new(BackendLoginOutcome.Success, connection, "") { Capabilities = dialogue.Capabilities });
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            await DisposeAsync(stream, socketStream);
            return phases.End(socketStream is not null
                ? new(BackendLoginOutcome.Unavailable, null, "login timed out") { ErrorType = "timeout" }
                : new(BackendLoginOutcome.ConnectFailed, null, "connect timed out") { ErrorType = "connect_timeout" });
        }
        catch (Exception ex) when (ex is SocketException or IOException or AuthenticationException)
        {
            await DisposeAsync(stream, socketStream);
            return phases.End(new(socketStream is not null ? BackendLoginOutcome.Unavailable : BackendLoginOutcome.ConnectFailed, null, Describe(ex))
            {
                ErrorType = ex switch
                {
                    AuthenticationException => "tls",
                    SocketException => "connect",
                    _ => "io",
                },
            });
        }
        catch
        {
            await DisposeAsync(stream, socketStream);
            phases.End(new(BackendLoginOutcome.Unavailable, null, "failed"));
            throw;
        }
        finally
        {
            reader.Dispose();
            dialogue.Dispose();
        }
    }

    private static int? IncomingTtl(ClientIdentity identity)
    {
        foreach (var (key, value) in identity.Fields)
        {
            if (value is not null && Ascii.EqualsIgnoreCase(key, "x-proxy-ttl"u8))
            {
                return int.TryParse(Encoding.ASCII.GetString(value), out var ttl) ? ttl : 0;
            }
        }

        return null;
    }

    private async Task<SslStream> WrapTlsAsync(Stream inner, BackendEndpoint backend, CancellationToken cancellationToken)
    {
        var tls = new SslStream(inner, leaveInnerStreamOpen: false);
        var options = new SslClientAuthenticationOptions
        {
            TargetHost = backend.TlsServerName ?? backend.Host,
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
        };
        if (_trustedRoots is not null)
        {
            options.CertificateChainPolicy = new X509ChainPolicy
            {
                TrustMode = X509ChainTrustMode.CustomRootTrust,
                RevocationMode = X509RevocationMode.NoCheck,
            };
            options.CertificateChainPolicy.CustomTrustStore.AddRange(_trustedRoots);
        }

        try
        {
            await tls.AuthenticateAsClientAsync(options, cancellationToken);
        }
        catch
        {
            await tls.DisposeAsync();
            throw;
        }

        _tlsBuffers.Apply(tls);
        return tls;
    }

    /// <summary>A failed hand-over's connection: the TLS stream over it (if any), then the socket's stream.</summary>
    private static async ValueTask DisposeAsync(Stream? stream, Stream? socketStream)
    {
        if (stream is not null && stream != socketStream)
        {
            await stream.DisposeAsync();
        }

        if (socketStream is not null)
        {
            await socketStream.DisposeAsync();
        }
    }

    internal static string Describe(Exception ex) => ex switch
    {
        SocketException socket => "connect failed: " + socket.SocketErrorCode,
        AuthenticationException => "TLS handshake with backend failed",
        _ => "I/O error: " + ex.GetType().Name,
    };
}

/// <summary>
/// A hand-over's two spans (connect, then authenticate) and its two durations, whichever path drives it. The spans
/// are children of the span current when the hand-over began, and never become current themselves: the epoll path
/// starts the second on an engine thread, whose context must not keep it.
/// </summary>
internal sealed class HandoverPhases
{
    private readonly TimeProvider _timeProvider;
    private readonly BackendEndpoint _backend;
    private readonly ActivityContext _parent;
    private readonly long _started;
    private long? _connectedAt;
    private Activity? _phase;

    public HandoverPhases(TimeProvider timeProvider, BackendEndpoint backend)
    {
        _timeProvider = timeProvider;
        _backend = backend;
        _parent = Activity.Current?.Context ?? default;
        _started = timeProvider.GetTimestamp();
        _phase = Start("imap.backend.connect");
        _phase?.SetTag("server.address", backend.Host).SetTag("server.port", backend.Port);
    }

    /// <summary>The backend handed over to.</summary>
    public BackendEndpoint Endpoint => _backend;

    /// <summary>
    /// The next line the reader holds, to the dialogue: its next step, or null when a line has still to arrive. A line
    /// beyond the limits breaks the dialogue. The authentication phase begins when the dialogue says it has.
    /// </summary>
    public static BackendStep? TryFeed(BackendLineReader reader, BackendLoginDialogue dialogue, HandoverPhases phases, LoginMechanism mechanism)
    {
        BackendStep step;
        try
        {
            if (!reader.TryTakeLine(out var line))
            {
                return null;
            }

            step = dialogue.OnLine(line);
        }
        catch (BackendProtocolException ex)
        {
            return dialogue.OnBroken(ex.Message);
        }

        if (dialogue.Authenticating && phases._connectedAt is null)
        {
            phases.Authenticating(mechanism);
        }

        return step;
    }

    /// <summary>The result with its durations; the span in progress ends (with an error status on failure).</summary>
    public BackendLoginResult End(BackendLoginResult result)
    {
        var ended = _timeProvider.GetTimestamp();
        if (_phase is { } phase)
        {
            if (result.Outcome != BackendLoginOutcome.Success)
            {
                phase.SetStatus(ActivityStatusCode.Error, result.ErrorType);
            }

            Stop(phase);
            _phase = null;
        }

        var connected = _connectedAt ?? ended;
        return result with
        {
            ConnectDuration = _timeProvider.GetElapsedTime(_started, connected),
            AuthDuration = _connectedAt is null ? TimeSpan.Zero : _timeProvider.GetElapsedTime(connected, ended),
        };
    }

    /// <summary>The connect phase ended (greeting, TLS, capabilities); authentication is its own span.</summary>
    private void Authenticating(LoginMechanism mechanism)
    {
        _connectedAt = _timeProvider.GetTimestamp();
        if (_phase is { } connect)
        {
            Stop(connect);
        }

        _phase = Start("imap.backend.authenticate");
        _phase?.SetTag("imapproxy.login.mechanism", mechanism switch
        {
            LoginMechanism.Plain => "plain",
            LoginMechanism.SaslLogin => "sasl_login",
            _ => "login",
        });
    }

    private Activity? Start(string name)
    {
        var current = Activity.Current;
        var activity = ImapProxyActivities.Source.StartActivity(name, ActivityKind.Client, _parent);
        activity?.SetTag("imapproxy.backend", _backend.Id);
        Activity.Current = current;
        return activity;
    }

    private static void Stop(Activity activity)
    {
        var current = Activity.Current;
        activity.Stop();
        Activity.Current = current;
    }
}
