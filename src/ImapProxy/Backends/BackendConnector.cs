using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using ImapProxy.Configuration;
using ImapProxy.Connections.Transport;
using ImapProxy.Protocol.PreAuth;
using ImapProxy.Protocol.Responses;
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
    // No zero-byte reads: a backend answers within the hand-over's time limit, so the buffer a waiting read holds is
    // held briefly, and each zero-byte read cost the epoll engine a peek (three system calls per login).
    private static readonly StreamPipeReaderOptions s_readerOptions = new(bufferSize: 4096, minimumReadSize: 1024, leaveOpen: true, useZeroByteReads: false);

    private readonly BackendsOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly X509Certificate2Collection? _trustedRoots;
    private readonly byte[]? _masterUser;
    private readonly byte[]? _masterPassword;
    private readonly TlsBufferPolicy _tlsBuffers;
    private readonly ISocketEngine _sockets;

    public BackendConnector(IOptions<ImapProxyOptions> options, TimeProvider timeProvider, TlsBufferPolicy tlsBuffers, ISocketEngine sockets)
    {
        _options = options.Value.Backends;
        _timeProvider = timeProvider;
        _tlsBuffers = tlsBuffers;
        _sockets = sockets;
        if (_options.CaFile is not null)
        {
            _trustedRoots = [];
            _trustedRoots.ImportFromPemFile(_options.CaFile);
        }

        if (_options.MasterUser is not null && _options.MasterPasswordFile is not null)
        {
            _masterUser = Encoding.UTF8.GetBytes(_options.MasterUser);
            _masterPassword = Encoding.UTF8.GetBytes(File.ReadAllText(_options.MasterPasswordFile).TrimEnd('\r', '\n'));
        }
    }

    public async Task<BackendLoginResult> LoginAsync(
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
            return new(BackendLoginOutcome.ProxyLoop, null, "x-proxy-ttl exhausted");
        }

        var started = _timeProvider.GetTimestamp();
        var handover = new Handover(_options.MaxResponseLine);
        handover.Phase = ImapProxyActivities.Source.StartActivity("imap.backend.connect", ActivityKind.Client);
        handover.Phase?.SetTag("imapproxy.backend", backend.Id).SetTag("server.address", backend.Host).SetTag("server.port", backend.Port);
        var result = await LoginCoreAsync(handover, backend, credentials, clientIdentity, endpoints, sessionId, ttl, cancellationToken);
        var ended = _timeProvider.GetTimestamp();
        var connected = handover.ConnectedAt ?? ended;
        if (handover.Phase is { } phase)
        {
            if (result.Outcome != BackendLoginOutcome.Success)
            {
                phase.SetStatus(ActivityStatusCode.Error, result.ErrorType);
            }

            phase.Stop();
        }

        return result with
        {
            ConnectDuration = _timeProvider.GetElapsedTime(started, connected),
            AuthDuration = handover.ConnectedAt is null ? TimeSpan.Zero : _timeProvider.GetElapsedTime(connected, ended),
        };
    }

    private async Task<BackendLoginResult> LoginCoreAsync(
        Handover handover,
        BackendEndpoint backend,
        ImapCredentials credentials,
        ClientIdentity clientIdentity,
        ClientEndpoints endpoints,
        string sessionId,
        int ttl,
        CancellationToken cancellationToken)
    {
        // One source and one timer for the whole hand-over, armed with the connect's limit until connected, then with
        // what is left of the login's (a source per limit, each linked with the caller's token, made four sources, two
        // timers and four registrations per login).
        var started = _timeProvider.GetTimestamp();
        using var timeout = new CancellationTokenSource(_options.ConnectTimeout < _options.LoginTimeout ? _options.ConnectTimeout : _options.LoginTimeout, _timeProvider);
        using var caller = cancellationToken.UnsafeRegister(static state => ((CancellationTokenSource)state!).Cancel(), timeout);
        try
        {
            await ConnectAsync(handover, backend, endpoints, timeout, started);
            var capabilities = await ReadGreetingAsync(handover, timeout.Token);

            if (backend.Tls == BackendTls.StartTls)
            {
                await StartTlsAsync(handover, backend, timeout.Token);
                capabilities = null;
            }

            capabilities ??= await FetchCapabilitiesAsync(handover, timeout.Token);

            // The connect phase ends here; authentication is its own span.
            handover.ConnectedAt = _timeProvider.GetTimestamp();
            handover.Phase?.Stop();
            handover.Phase = ImapProxyActivities.Source.StartActivity("imap.backend.authenticate", ActivityKind.Client);
            handover.Phase?.SetTag("imapproxy.backend", backend.Id).SetTag("imapproxy.login.mechanism", credentials.Mechanism switch
            {
                LoginMechanism.Plain => "plain",
                LoginMechanism.SaslLogin => "sasl_login",
                _ => "login",
            });

            if (_options.ForwardClientId && CapabilityList.Contains(capabilities, "ID"u8))
            {
                // Pipelined with the authentication: the ID answer is read past on the way to the login's.
                WriteId(handover, handover.NextTag(), clientIdentity, endpoints, sessionId, ttl - 1, CapabilityList.Contains(capabilities, "LITERAL+"u8));
            }

            var authTag = handover.NextTag();
            var status = await AuthenticateAsync(handover, authTag, credentials, capabilities, backend.Authentication, timeout.Token);
            if (status.Outcome != BackendLoginOutcome.Success)
            {
                await handover.DisposeAsync();
                return new(status.Outcome, null, status.Detail) { ErrorType = status.Outcome == BackendLoginOutcome.AuthenticationFailed ? null : "refused" };
            }

            var postLogin = status.Capabilities ?? await FetchCapabilitiesAsync(handover, timeout.Token);
            var connection = new BackendConnection(backend, handover.Socket!, handover.Stream!, handover.Reader!);
            return new(BackendLoginOutcome.Success, connection, "") { Capabilities = postLogin };
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            var connected = handover.Stream is not null;
            await handover.DisposeAsync();
            return connected
                ? new(BackendLoginOutcome.Unavailable, null, "login timed out") { ErrorType = "timeout" }
                : new(BackendLoginOutcome.ConnectFailed, null, "connect timed out") { ErrorType = "connect_timeout" };
        }
        catch (HandoverException ex)
        {
            await handover.DisposeAsync();
            return new(ex.Outcome, null, ex.Message) { ErrorType = "protocol" };
        }
        catch (Exception ex) when (ex is SocketException or IOException or AuthenticationException)
        {
            var connected = handover.Stream is not null;
            await handover.DisposeAsync();
            return new(connected ? BackendLoginOutcome.Unavailable : BackendLoginOutcome.ConnectFailed, null, Describe(ex))
            {
                ErrorType = ex switch
                {
                    AuthenticationException => "tls",
                    SocketException => "connect",
                    _ => "io",
                },
            };
        }
        catch
        {
            await handover.DisposeAsync();
            throw;
        }
        finally
        {
            handover.ReleaseBuffers();
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

    /// <summary>
    /// Connects within the connect's limit (<paramref name="timeout"/> is armed with it), then gives the rest of the
    /// hand-over what is left of the login's limit, counted from <paramref name="started"/>.
    /// </summary>
    private async Task ConnectAsync(Handover handover, BackendEndpoint backend, ClientEndpoints endpoints, CancellationTokenSource timeout, long started)
    {
        var cancellationToken = timeout.Token;
        var stream = await _sockets.ConnectAsync(backend.Host, backend.Port, endpoints.ClientStream, cancellationToken);
        handover.Socket = (ISocketControl)stream;
        handover.Stream = stream;
        var left = _options.LoginTimeout - _timeProvider.GetElapsedTime(started);
        timeout.CancelAfter(left > TimeSpan.Zero ? left : TimeSpan.Zero);
        if (backend.ProxyProtocol)
        {
            await stream.WriteAsync(ProxyProtocolHeader.CreateV2(endpoints.Client, endpoints.Local), cancellationToken);
        }

        if (backend.Tls == BackendTls.Implicit)
        {
            await WrapTlsAsync(handover, backend, cancellationToken);
        }
        else
        {
            handover.Reader = PipeReader.Create(stream, s_readerOptions);
        }
    }

    private async Task WrapTlsAsync(Handover handover, BackendEndpoint backend, CancellationToken cancellationToken)
    {
        var tls = new SslStream(handover.Stream!, leaveInnerStreamOpen: false);
        handover.Stream = tls;
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

        await tls.AuthenticateAsClientAsync(options, cancellationToken);
        _tlsBuffers.Apply(tls);
        handover.Reader = PipeReader.Create(tls, s_readerOptions);
    }

    private static async Task<byte[]?> ReadGreetingAsync(Handover handover, CancellationToken cancellationToken)
    {
        var line = await handover.ReadLineAsync(cancellationToken);
        if (!ResponseLine.TryParse(line.Span, out var greeting) || greeting.Kind != ResponseKind.Untagged)
        {
            throw new HandoverException(BackendLoginOutcome.Unavailable, "backend greeting is not IMAP");
        }

        return greeting.Status switch
        {
            ImapStatus.Ok => greeting.CodeCapabilities.IsEmpty ? null : greeting.CodeCapabilities.ToArray(),
            ImapStatus.Bye => throw new HandoverException(BackendLoginOutcome.Unavailable, "backend greeted with BYE"),
            ImapStatus.PreAuth => throw new HandoverException(BackendLoginOutcome.Unavailable, "backend greeted with PREAUTH"),
            _ => throw new HandoverException(BackendLoginOutcome.Unavailable, "backend greeting is not OK"),
        };
    }

    private async Task StartTlsAsync(Handover handover, BackendEndpoint backend, CancellationToken cancellationToken)
    {
        var tag = handover.NextTag();
        WriteSimpleCommand(handover, tag, "STARTTLS"u8);
        await handover.SendAsync(cancellationToken);
        await ExpectTaggedOkAsync(handover, tag, "STARTTLS", cancellationToken);

        // Nothing may follow the OK before the handshake (the mirror of the rule the proxy enforces itself).
        if (handover.Reader!.TryRead(out var leftover))
        {
            var extra = !leftover.Buffer.IsEmpty;
            handover.Reader.AdvanceTo(leftover.Buffer.Start);
            if (extra)
            {
                throw new HandoverException(BackendLoginOutcome.Unavailable, "backend sent data after STARTTLS OK");
            }
        }

        await handover.Reader.CompleteAsync();
        handover.Reader = null;
        await WrapTlsAsync(handover, backend, cancellationToken);
    }

    private static async Task<byte[]> FetchCapabilitiesAsync(Handover handover, CancellationToken cancellationToken)
    {
        var tag = handover.NextTag();
        WriteSimpleCommand(handover, tag, "CAPABILITY"u8);
        await handover.SendAsync(cancellationToken);
        byte[]? capabilities = null;
        while (true)
        {
            var line = await handover.ReadLineAsync(cancellationToken);
            if (!ResponseLine.TryParse(line.Span, out var response))
            {
                throw new HandoverException(BackendLoginOutcome.Unavailable, "unparseable response to CAPABILITY");
            }

            if (response.Kind == ResponseKind.Untagged && response.Status is null && !response.DataCapabilities.IsEmpty)
            {
                capabilities = response.DataCapabilities.ToArray();
            }
            else if (response.Kind == ResponseKind.Untagged && response.Status == ImapStatus.Bye)
            {
                throw new HandoverException(BackendLoginOutcome.Unavailable, "backend said BYE");
            }
            else if (response.Kind == ResponseKind.Tagged && response.Tag.SequenceEqual(Encoding.ASCII.GetBytes(tag)))
            {
                if (response.Status != ImapStatus.Ok || capabilities is null)
                {
                    throw new HandoverException(BackendLoginOutcome.Unavailable, "CAPABILITY failed");
                }

                return capabilities;
            }
        }
    }

    private static async Task ExpectTaggedOkAsync(Handover handover, string tag, string what, CancellationToken cancellationToken)
    {
        var tagBytes = Encoding.ASCII.GetBytes(tag);
        while (true)
        {
            var line = await handover.ReadLineAsync(cancellationToken);
            if (!ResponseLine.TryParse(line.Span, out var response))
            {
                throw new HandoverException(BackendLoginOutcome.Unavailable, $"unparseable response to {what}");
            }

            if (response.Kind == ResponseKind.Untagged && response.Status == ImapStatus.Bye)
            {
                throw new HandoverException(BackendLoginOutcome.Unavailable, "backend said BYE");
            }

            if (response.Kind == ResponseKind.Tagged && response.Tag.SequenceEqual(tagBytes))
            {
                if (response.Status != ImapStatus.Ok)
                {
                    throw new HandoverException(BackendLoginOutcome.Unavailable, $"{what} refused");
                }

                return;
            }
        }
    }

    private readonly record struct AuthStatus(BackendLoginOutcome Outcome, byte[]? Capabilities, string Detail);

    private async Task<AuthStatus> AuthenticateAsync(Handover handover, string tag, ImapCredentials credentials, byte[] capabilities, BackendAuthentication method, CancellationToken cancellationToken)
    {
        var tagBytes = Encoding.ASCII.GetBytes(tag);
        var plain = method == BackendAuthentication.Auto && CapabilityList.Contains(capabilities, "AUTH=PLAIN"u8);
        var saslIr = CapabilityList.Contains(capabilities, "SASL-IR"u8);
        var literalPlus = CapabilityList.Contains(capabilities, "LITERAL+"u8);
        var usesMaster = _masterUser is not null;
        var needsPlain = usesMaster || credentials.AuthorizationId.Length > 0;
        byte[]? postLoginCapabilities = null;

        if (plain)
        {
            var encoded = usesMaster
                ? SaslCodec.EncodePlain(credentials.EffectiveUser, _masterUser, _masterPassword)
                : SaslCodec.EncodePlain(credentials.AuthorizationId, credentials.AuthenticationId, credentials.Password);
            try
            {
                Write(handover, tagBytes);
                Write(handover, " AUTHENTICATE PLAIN"u8);
                if (saslIr)
                {
                    Write(handover, " "u8);
                    Write(handover, encoded);
                    Write(handover, "\r\n"u8);
                    await handover.SendAsync(cancellationToken);
                }
                else
                {
                    Write(handover, "\r\n"u8);
                    await handover.SendAsync(cancellationToken);
                    if (await WaitForContinuationAsync(handover, tagBytes, cancellationToken) is { } refused)
                    {
                        return refused;
                    }

                    Write(handover, encoded);
                    Write(handover, "\r\n"u8);
                    await handover.SendAsync(cancellationToken);
                }
            }
            finally
            {
                Array.Clear(encoded);
            }
        }
        else if (needsPlain)
        {
            return new(BackendLoginOutcome.Unavailable, null, "backend lacks AUTH=PLAIN, needed for an authorization identity");
        }
        else if (CapabilityList.Contains(capabilities, "LOGINDISABLED"u8))
        {
            return new(BackendLoginOutcome.Unavailable, null, "backend has LOGINDISABLED and no AUTH=PLAIN");
        }
        else
        {
            Write(handover, tagBytes);
            Write(handover, " LOGIN "u8);
            if (await WriteStringAsync(handover, credentials.AuthenticationId, literalPlus, tagBytes, cancellationToken) is { } refusedUser)
            {
                return refusedUser;
            }

            Write(handover, " "u8);
            if (await WriteStringAsync(handover, credentials.Password, literalPlus, tagBytes, cancellationToken) is { } refusedPassword)
            {
                return refusedPassword;
            }

            Write(handover, "\r\n"u8);
            await handover.SendAsync(cancellationToken);
        }

        while (true)
        {
            var line = await handover.ReadLineAsync(cancellationToken);
            if (!ResponseLine.TryParse(line.Span, out var response))
            {
                return new(BackendLoginOutcome.Unavailable, null, "unparseable response to authentication");
            }

            switch (response.Kind)
            {
                case ResponseKind.Continuation:
                    // PLAIN needs no further round; cancel whatever the backend is asking for.
                    Write(handover, "*\r\n"u8);
                    await handover.SendAsync(cancellationToken);
                    continue;

                case ResponseKind.Untagged when response.Status == ImapStatus.Bye:
                    return new(BackendLoginOutcome.Unavailable, null, "backend said BYE during login");

                case ResponseKind.Untagged when !response.DataCapabilities.IsEmpty:
                    postLoginCapabilities = response.DataCapabilities.ToArray();
                    continue;

                case ResponseKind.Tagged when response.Tag.SequenceEqual(tagBytes):
                    return Classify(response, postLoginCapabilities);

                default:
                    // ID's untagged and tagged answers, and anything else unsolicited.
                    continue;
            }
        }
    }

    private static AuthStatus Classify(ResponseLine response, byte[]? untaggedCapabilities)
    {
        if (response.Status == ImapStatus.Ok)
        {
            var capabilities = response.CodeCapabilities.IsEmpty ? untaggedCapabilities : response.CodeCapabilities.ToArray();
            return new(BackendLoginOutcome.Success, capabilities, "");
        }

        if (response.Status == ImapStatus.Bad)
        {
            return new(BackendLoginOutcome.Unavailable, null, "backend answered BAD to the login");
        }

        var code = response.CodeName;
        if (Ascii.EqualsIgnoreCase(code, "UNAVAILABLE"u8) || Ascii.EqualsIgnoreCase(code, "SERVERBUG"u8))
        {
            return new(BackendLoginOutcome.Unavailable, null, "backend: " + Encoding.ASCII.GetString(code));
        }

        if (Ascii.EqualsIgnoreCase(code, "LIMIT"u8))
        {
            return new(BackendLoginOutcome.Limit, null, "backend: LIMIT");
        }

        return new(BackendLoginOutcome.AuthenticationFailed, null, code.IsEmpty ? "backend: NO" : "backend: " + Encoding.ASCII.GetString(code));
    }

    /// <summary>Writes a credential as a quoted string, or as a literal when its bytes do not allow quoting.</summary>
    private static async Task<AuthStatus?> WriteStringAsync(Handover handover, byte[] value, bool literalPlus, byte[] tag, CancellationToken cancellationToken)
    {
        if (AstringWriter.ChooseForm(value) == AstringForm.Quoted)
        {
            AstringWriter.WriteQuoted(handover.Buffer, value);
            return null;
        }

        AstringWriter.WriteLiteralHeader(handover.Buffer, value.Length, literalPlus);
        if (!literalPlus)
        {
            await handover.SendAsync(cancellationToken);
            if (await WaitForContinuationAsync(handover, tag, cancellationToken) is { } refused)
            {
                return refused;
            }
        }

        Write(handover, value);
        return null;
    }

    /// <summary>Reads until the backend asks for more ("+"); a tagged answer to the command instead ends it.</summary>
    private static async Task<AuthStatus?> WaitForContinuationAsync(Handover handover, byte[] tag, CancellationToken cancellationToken)
    {
        while (true)
        {
            var line = await handover.ReadLineAsync(cancellationToken);
            if (!ResponseLine.TryParse(line.Span, out var response))
            {
                return new(BackendLoginOutcome.Unavailable, null, "unparseable response during login");
            }

            if (response.Kind == ResponseKind.Continuation)
            {
                return null;
            }

            if (response.Kind == ResponseKind.Untagged && response.Status == ImapStatus.Bye)
            {
                return new(BackendLoginOutcome.Unavailable, null, "backend said BYE during login");
            }

            if (response.Kind == ResponseKind.Tagged && response.Tag.SequenceEqual(tag))
            {
                var status = Classify(response, null);
                return status.Outcome == BackendLoginOutcome.Success
                    ? new(BackendLoginOutcome.Unavailable, null, "backend completed the login without the credentials")
                    : status;
            }
        }
    }

    private static void WriteId(Handover handover, string tag, ClientIdentity identity, ClientEndpoints endpoints, string sessionId, int ttl, bool literalPlus)
    {
        var buffer = handover.Buffer;
        WriteAscii(handover, tag);
        Write(handover, " ID ("u8);
        Span<byte> text = stackalloc byte[128]; // the longest IPv6 address with a scope is 65 characters
        WritePair(buffer, "x-originating-ip"u8, Utf8(Normalize(endpoints.Client.Address), text), first: true);
        WritePair(buffer, "x-originating-port"u8, Utf8(endpoints.Client.Port, text));
        WritePair(buffer, "x-connected-ip"u8, Utf8(Normalize(endpoints.Local.Address), text));
        WritePair(buffer, "x-connected-port"u8, Utf8(endpoints.Local.Port, text));
        WritePair(buffer, "x-session-id"u8, sessionId.Length <= text.Length ? text[..Encoding.ASCII.GetBytes(sessionId, text)] : Encoding.ASCII.GetBytes(sessionId));
        WritePair(buffer, "x-proxy-ttl"u8, Utf8(ttl, text));
        foreach (var (key, value) in identity.Fields)
        {
            // The proxy's own fields are never taken from the client (Dovecot trusts them from the proxy).
            if (IsReservedField(key) || AstringWriter.ChooseForm(key) != AstringForm.Quoted)
            {
                continue;
            }

            if (value is not null && AstringWriter.ChooseForm(value) != AstringForm.Quoted && !literalPlus)
            {
                continue;
            }

            Write(handover, " "u8);
            AstringWriter.WriteQuoted(buffer, key);
            Write(handover, " "u8);
            if (value is null)
            {
                Write(handover, "NIL"u8);
            }
            else if (AstringWriter.ChooseForm(value) == AstringForm.Quoted)
            {
                AstringWriter.WriteQuoted(buffer, value);
            }
            else
            {
                AstringWriter.WriteLiteralHeader(buffer, value.Length, nonSynchronising: true);
                Write(handover, value);
            }
        }

        Write(handover, ")\r\n"u8);
    }

    private static bool IsReservedField(byte[] key)
    {
        // Field names are at most 30 octets (RFC 2971).
        Span<byte> lower = stackalloc byte[key.Length];
        for (var i = 0; i < key.Length; i++)
        {
            lower[i] = key[i] is >= (byte)'A' and <= (byte)'Z' ? (byte)(key[i] | 0x20) : key[i];
        }

        return lower.StartsWith("x-originating-"u8) || lower.StartsWith("x-connected-"u8) ||
            lower.StartsWith("x-session-"u8) || lower.StartsWith("x-proxy-"u8) || lower.StartsWith("x-forward-"u8);
    }

    private static void WritePair(IBufferWriter<byte> buffer, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, bool first = false)
    {
        if (!first)
        {
            ResponseWriter.Write(buffer, " "u8);
        }

        AstringWriter.WriteQuoted(buffer, key);
        ResponseWriter.Write(buffer, " "u8);
        AstringWriter.WriteQuoted(buffer, value);
    }

    /// <summary>A number or an address as text, formatted into <paramref name="into"/> (no string on the way).</summary>
    private static ReadOnlySpan<byte> Utf8<T>(T value, Span<byte> into)
        where T : IUtf8SpanFormattable =>
        value.TryFormat(into, out var written, default, System.Globalization.CultureInfo.InvariantCulture)
            ? into[..written]
            : throw new InvalidOperationException($"{typeof(T).Name} does not fit {into.Length} bytes");

    private static IPAddress Normalize(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;

    private static void WriteSimpleCommand(Handover handover, string tag, ReadOnlySpan<byte> command)
    {
        WriteAscii(handover, tag);
        Write(handover, " "u8);
        Write(handover, command);
        Write(handover, "\r\n"u8);
    }

    private static void Write(Handover handover, ReadOnlySpan<byte> bytes) => ResponseWriter.Write(handover.Buffer, bytes);

    /// <summary>A tag (ASCII), written straight into the command buffer.</summary>
    private static void WriteAscii(Handover handover, string text) =>
        handover.Buffer.Advance(Encoding.ASCII.GetBytes(text, handover.Buffer.GetSpan(text.Length)));

    private static string Describe(Exception ex) => ex switch
    {
        SocketException socket => "connect failed: " + socket.SocketErrorCode,
        AuthenticationException => "TLS handshake with backend failed",
        _ => "I/O error: " + ex.GetType().Name,
    };

    private sealed class HandoverException(BackendLoginOutcome outcome, string detail) : Exception(detail)
    {
        public BackendLoginOutcome Outcome { get; } = outcome;
    }

    /// <summary>The state of one hand-over in progress: the connection and a write buffer of commands.</summary>
    private sealed class Handover(int maxLine) : IAsyncDisposable
    {
        private int _tag;
        private byte[] _line = []; // rented: the last line read

        /// <summary>The socket engine's stream, which owns the socket (<see cref="Stream"/> may be TLS over it).</summary>
        public ISocketControl? Socket { get; set; }

        public Stream? Stream { get; set; }

        public PipeReader? Reader { get; set; }

        /// <summary>The span of the phase in progress (connect, then authenticate).</summary>
        public Activity? Phase { get; set; }

        /// <summary>When the connect phase ended (timestamp), or null if it never did.</summary>
        public long? ConnectedAt { get; set; }

        /// <summary>The commands being written; holds credentials, so it is zeroed after each send.</summary>
        public RentedBufferWriter Buffer { get; } = new();

        public string NextTag() => "P" + (++_tag).ToString(System.Globalization.CultureInfo.InvariantCulture);

        public async Task SendAsync(CancellationToken cancellationToken)
        {
            await Stream!.WriteAsync(Buffer.WrittenMemory, cancellationToken);
            await Stream.FlushAsync(cancellationToken);
            // Clear (not just reset): the buffer has held credentials.
            Buffer.Clear();
        }

        /// <summary>Zeroes the command buffer and returns the rented arrays (the hand-over reads and writes no more).</summary>
        public void ReleaseBuffers()
        {
            Buffer.Dispose();
            if (_line.Length > 0)
            {
                ArrayPool<byte>.Shared.Return(_line);
                _line = [];
            }
        }

        /// <summary>
        /// One response line without CRLF, valid until the next read (it lives in the hand-over's line buffer). A
        /// literal announced at the end of a line (e.g. inside an untagged ID) is skipped with the rest of that
        /// response: nothing the hand-over needs travels in literals. A line the backend sent already is taken with
        /// no asynchronous step.
        /// </summary>
        public ValueTask<ReadOnlyMemory<byte>> ReadLineAsync(CancellationToken cancellationToken)
        {
            if (Reader!.TryRead(out var result) && TakeLine(result) is { } line)
            {
                return Protocol.Parsing.ImapCommandParser.TryGetTrailingLiteral(line.Span, out _, out _)
                    ? SkipLiteralsAsync(line, cancellationToken)
                    : new(line);
            }

            return ReadLineSlowAsync(cancellationToken);
        }

        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
        private async ValueTask<ReadOnlyMemory<byte>> ReadLineSlowAsync(CancellationToken cancellationToken)
        {
            var line = await ReadRawLineAsync(cancellationToken);
            return Protocol.Parsing.ImapCommandParser.TryGetTrailingLiteral(line.Span, out _, out _)
                ? await SkipLiteralsAsync(line, cancellationToken)
                : line;
        }

        private async ValueTask<ReadOnlyMemory<byte>> SkipLiteralsAsync(ReadOnlyMemory<byte> line, CancellationToken cancellationToken)
        {
            // Copied out: the lines read past reuse the line buffer.
            ReadOnlyMemory<byte> kept = line.ToArray();
            var continuation = line;
            while (Protocol.Parsing.ImapCommandParser.TryGetTrailingLiteral(continuation.Span, out var length, out _))
            {
                if (length > maxLine)
                {
                    throw new HandoverException(BackendLoginOutcome.Unavailable, "backend literal too large");
                }

                await SkipAsync(length, cancellationToken);
                continuation = await ReadRawLineAsync(cancellationToken);
            }

            return kept;
        }

        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
        private async ValueTask<ReadOnlyMemory<byte>> ReadRawLineAsync(CancellationToken cancellationToken)
        {
            while (true)
            {
                if (TakeLine(await Reader!.ReadAsync(cancellationToken)) is { } line)
                {
                    return line;
                }
            }
        }

        /// <summary>
        /// The first line of what was read, copied into the line buffer (without CRLF) and consumed; null (all of it
        /// examined) if no whole line is there yet. Throws when the line grows too long or the backend has closed.
        /// </summary>
        private ReadOnlyMemory<byte>? TakeLine(ReadResult result)
        {
            var buffer = result.Buffer;
            var lf = buffer.PositionOf((byte)'\n');
            if (lf is not null)
            {
                var raw = buffer.Slice(0, lf.Value);
                var length = (int)raw.Length;
                if (_line.Length < length)
                {
                    if (_line.Length > 0)
                    {
                        ArrayPool<byte>.Shared.Return(_line);
                    }

                    _line = ArrayPool<byte>.Shared.Rent(Math.Max(length, 256));
                }

                raw.CopyTo(_line);
                Reader!.AdvanceTo(buffer.GetPosition(1, lf.Value));
                return _line.AsMemory(0, length > 0 && _line[length - 1] == (byte)'\r' ? length - 1 : length);
            }

            Reader!.AdvanceTo(buffer.Start, buffer.End);
            if (buffer.Length > maxLine)
            {
                throw new HandoverException(BackendLoginOutcome.Unavailable, "backend response line too long");
            }

            if (result.IsCompleted)
            {
                throw new HandoverException(BackendLoginOutcome.Unavailable, "backend closed the connection during login");
            }

            return null;
        }

        private async Task SkipAsync(long length, CancellationToken cancellationToken)
        {
            while (length > 0)
            {
                var result = await Reader!.ReadAsync(cancellationToken);
                var take = Math.Min(length, result.Buffer.Length);
                Reader.AdvanceTo(result.Buffer.GetPosition(take));
                length -= take;
                if (length > 0 && result.IsCompleted)
                {
                    throw new HandoverException(BackendLoginOutcome.Unavailable, "backend closed the connection during login");
                }
            }
        }

        public async ValueTask DisposeAsync()
        {
            ReleaseBuffers();
            if (Reader is not null)
            {
                await Reader.CompleteAsync();
            }

            if (Stream is not null)
            {
                await Stream.DisposeAsync();
            }

            Socket?.Dispose();
        }
    }
}
