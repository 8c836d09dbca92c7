using System.Buffers.Text;
using System.Net;
using System.Text;
using ImapProxy.Configuration;
using ImapProxy.Protocol.PreAuth;
using ImapProxy.Protocol.Responses;
using ImapProxy.Protocol.Sasl;

namespace ImapProxy.Backends;

/// <summary>What the driver of a <see cref="BackendLoginDialogue"/> does next.</summary>
internal enum BackendStep
{
    /// <summary>Read the backend's next response line and give it to <see cref="BackendLoginDialogue.OnLine"/>.</summary>
    ReadLine,

    /// <summary>Send <see cref="BackendLoginDialogue.Output"/> (then clear it), then read the next line.</summary>
    Send,

    /// <summary>
    /// The backend said OK to STARTTLS: with nothing received past that line, make the TLS handshake, then call
    /// <see cref="BackendLoginDialogue.OnTlsEstablished"/>.
    /// </summary>
    StartTls,

    /// <summary>Over: <see cref="BackendLoginDialogue.Outcome"/> says how.</summary>
    Done,
}

/// <summary>
/// The IMAP side of the hand-over of DESIGN §5, with no I/O of its own: the backend's greeting, STARTTLS, capabilities,
/// ID with the client's details (pipelined with the authentication), AUTHENTICATE PLAIN or LOGIN with the client's
/// credentials, and the post-login capabilities. Response lines go in (<see cref="OnLine"/>), commands come out
/// (<see cref="Output"/>); whoever connects and reads drives it (<see cref="BackendConnector"/>'s asynchronous path,
/// or an engine thread's readiness events in <see cref="EpollBackendLogin"/>), so both speak the same protocol.
/// </summary>
internal sealed class BackendLoginDialogue : IDisposable
{
    private readonly BackendDialogueSettings _settings;
    private readonly BackendEndpoint _backend;
    private readonly ImapCredentials _credentials;
    private readonly ClientIdentity _identity;
    private readonly ClientEndpoints _endpoints;
    private readonly string _sessionId;
    private readonly int _ttl;
    private State _state = State.Greeting;
    private int _lastTag;
    private int _expectedTag; // the tag of the command whose tagged answer the state waits for
    private byte[]? _capabilities; // the backend's, before the login
    private byte[]? _postLogin; // its post-login list, from an untagged CAPABILITY during the login
    private byte[]? _secret; // what is written after the backend's continuation: PLAIN's message, or a literal credential
    private bool _secretOwned; // PLAIN's message is this dialogue's own (zeroed when done); a credential is the client's
    private bool _literalPlus;

    public BackendLoginDialogue(BackendDialogueSettings settings, BackendEndpoint backend, ImapCredentials credentials, ClientIdentity identity, ClientEndpoints endpoints, string sessionId, int ttl)
    {
        _settings = settings;
        _backend = backend;
        _credentials = credentials;
        _identity = identity;
        _endpoints = endpoints;
        _sessionId = sessionId;
        _ttl = ttl;
    }

    private enum State
    {
        Greeting,
        StartTlsAnswer,
        Capabilities,
        PlainContinuation,
        UserContinuation,
        PasswordContinuation,
        AuthenticationAnswer,
        PostLoginCapabilities,
        Done,
    }

    /// <summary>
    /// The commands to send; holds credentials, so the driver clears it (which zeroes it) after each send, and
    /// <see cref="Dispose"/> zeroes what is left.
    /// </summary>
    public RentedBufferWriter Output { get; } = new();

    /// <summary>Whether the connect phase is over (greeting, TLS and capabilities) and authentication has begun.</summary>
    public bool Authenticating { get; private set; }

    public BackendLoginOutcome Outcome { get; private set; }

    /// <summary>For logs: why it failed (never credentials, never backend text beyond a response code).</summary>
    public string Detail { get; private set; } = "";

    /// <summary>A bounded label for metrics when it failed: "protocol", "refused", or null for refused credentials.</summary>
    public string? ErrorType { get; private set; }

    /// <summary>On success, the backend's post-login capability list (without the keyword).</summary>
    public byte[]? Capabilities { get; private set; }

    /// <summary>The next step for one response line (without CRLF) from the backend.</summary>
    public BackendStep OnLine(ReadOnlySpan<byte> line)
    {
        switch (_state)
        {
            case State.Greeting:
                return OnGreeting(line);

            case State.StartTlsAnswer:
                return OnStartTlsAnswer(line);

            case State.Capabilities:
            case State.PostLoginCapabilities:
                return OnCapabilities(line);

            case State.PlainContinuation:
            case State.UserContinuation:
            case State.PasswordContinuation:
                return OnContinuation(line);

            case State.AuthenticationAnswer:
                return OnAuthenticationAnswer(line);

            default:
                throw new InvalidOperationException("The hand-over's dialogue is over.");
        }
    }

    /// <summary>The TLS handshake after STARTTLS succeeded: the capabilities are asked for again.</summary>
    public BackendStep OnTlsEstablished()
    {
        if (_state != State.StartTlsAnswer)
        {
            throw new InvalidOperationException("No STARTTLS was answered.");
        }

        return AskCapabilities(State.Capabilities);
    }

    /// <summary>The backend closed the connection (or a line broke the limits) before the dialogue was over.</summary>
    public BackendStep OnBroken(string detail) => Fail(BackendLoginOutcome.Unavailable, detail);

    /// <summary>Zeroes what is left of the commands and of a credential not yet sent.</summary>
    public void Dispose()
    {
        Output.Dispose();
        if (_secret is not null && _secretOwned)
        {
            Array.Clear(_secret);
        }

        _secret = null;
    }

    private BackendStep OnGreeting(ReadOnlySpan<byte> line)
    {
        if (!ResponseLine.TryParse(line, out var greeting) || greeting.Kind != ResponseKind.Untagged)
        {
            return Fail(BackendLoginOutcome.Unavailable, "backend greeting is not IMAP");
        }

        switch (greeting.Status)
        {
            case ImapStatus.Ok:
                break;
            case ImapStatus.Bye:
                return Fail(BackendLoginOutcome.Unavailable, "backend greeted with BYE");
            case ImapStatus.PreAuth:
                return Fail(BackendLoginOutcome.Unavailable, "backend greeted with PREAUTH");
            default:
                return Fail(BackendLoginOutcome.Unavailable, "backend greeting is not OK");
        }

        if (_backend.Tls == BackendTls.StartTls)
        {
            // Whatever the greeting said is asked again over TLS.
            WriteSimpleCommand("STARTTLS"u8);
            _state = State.StartTlsAnswer;
            return BackendStep.Send;
        }

        if (greeting.CodeCapabilities.IsEmpty)
        {
            return AskCapabilities(State.Capabilities);
        }

        _capabilities = greeting.CodeCapabilities.ToArray();
        return BeginAuthentication();
    }

    private BackendStep OnStartTlsAnswer(ReadOnlySpan<byte> line)
    {
        if (!ResponseLine.TryParse(line, out var response))
        {
            return Fail(BackendLoginOutcome.Unavailable, "unparseable response to STARTTLS");
        }

        if (response.Kind == ResponseKind.Untagged && response.Status == ImapStatus.Bye)
        {
            return Fail(BackendLoginOutcome.Unavailable, "backend said BYE");
        }

        if (response.Kind != ResponseKind.Tagged || !IsExpected(response.Tag))
        {
            return BackendStep.ReadLine;
        }

        return response.Status == ImapStatus.Ok ? BackendStep.StartTls : Fail(BackendLoginOutcome.Unavailable, "STARTTLS refused");
    }

    private BackendStep OnCapabilities(ReadOnlySpan<byte> line)
    {
        if (!ResponseLine.TryParse(line, out var response))
        {
            return Fail(BackendLoginOutcome.Unavailable, "unparseable response to CAPABILITY");
        }

        var postLogin = _state == State.PostLoginCapabilities;
        if (response.Kind == ResponseKind.Untagged && response.Status is null && !response.DataCapabilities.IsEmpty)
        {
            if (postLogin)
            {
                _postLogin = response.DataCapabilities.ToArray();
            }
            else
            {
                _capabilities = response.DataCapabilities.ToArray();
            }

            return BackendStep.ReadLine;
        }

        if (response.Kind == ResponseKind.Untagged && response.Status == ImapStatus.Bye)
        {
            return Fail(BackendLoginOutcome.Unavailable, "backend said BYE");
        }

        if (response.Kind != ResponseKind.Tagged || !IsExpected(response.Tag))
        {
            return BackendStep.ReadLine;
        }

        if (response.Status != ImapStatus.Ok || (postLogin ? _postLogin : _capabilities) is null)
        {
            return Fail(BackendLoginOutcome.Unavailable, "CAPABILITY failed");
        }

        return postLogin ? Succeed(_postLogin!) : BeginAuthentication();
    }

    /// <summary>The connect phase is over: ID (when the backend has it and forwarding is on), then the credentials.</summary>
    private BackendStep BeginAuthentication()
    {
        Authenticating = true;
        var capabilities = _capabilities!;
        _literalPlus = CapabilityList.Contains(capabilities, "LITERAL+"u8);
        if (_settings.ForwardClientId && CapabilityList.Contains(capabilities, "ID"u8))
        {
            // Pipelined with the authentication: the ID answer is read past on the way to the login's.
            WriteId(NextTag());
        }

        _expectedTag = NextTag();
        var plain = _backend.Authentication == BackendAuthentication.Auto && CapabilityList.Contains(capabilities, "AUTH=PLAIN"u8);
        var usesMaster = _settings.MasterUser is not null;
        if (plain)
        {
            var encoded = usesMaster
                ? SaslCodec.EncodePlain(_credentials.EffectiveUser, _settings.MasterUser, _settings.MasterPassword)
                : SaslCodec.EncodePlain(_credentials.AuthorizationId, _credentials.AuthenticationId, _credentials.Password);
            WriteTag(_expectedTag);
            Write(" AUTHENTICATE PLAIN"u8);
            if (CapabilityList.Contains(capabilities, "SASL-IR"u8))
            {
                Write(" "u8);
                Write(encoded);
                Write("\r\n"u8);
                Array.Clear(encoded);
                _state = State.AuthenticationAnswer;
            }
            else
            {
                Write("\r\n"u8);
                _secret = encoded;
                _secretOwned = true;
                _state = State.PlainContinuation;
            }

            return BackendStep.Send;
        }

        if (usesMaster || _credentials.AuthorizationId.Length > 0)
        {
            return Fail(BackendLoginOutcome.Unavailable, "backend lacks AUTH=PLAIN, needed for an authorization identity", "refused");
        }

        if (CapabilityList.Contains(capabilities, "LOGINDISABLED"u8))
        {
            return Fail(BackendLoginOutcome.Unavailable, "backend has LOGINDISABLED and no AUTH=PLAIN", "refused");
        }

        WriteTag(_expectedTag);
        Write(" LOGIN "u8);
        if (WriteString(_credentials.AuthenticationId))
        {
            _state = State.UserContinuation;
            return BackendStep.Send;
        }

        return ContinueLoginAfterUser();
    }

    /// <summary>LOGIN's second argument and the end of the command, after the first was written whole.</summary>
    private BackendStep ContinueLoginAfterUser()
    {
        Write(" "u8);
        if (WriteString(_credentials.Password))
        {
            _state = State.PasswordContinuation;
            return BackendStep.Send;
        }

        Write("\r\n"u8);
        _state = State.AuthenticationAnswer;
        return BackendStep.Send;
    }

    /// <summary>
    /// Writes a credential as a quoted string, or as a literal when its bytes do not allow quoting. True when the
    /// literal is a synchronising one: the command is sent up to its header, and the credential follows the backend's
    /// continuation (it is kept in <see cref="_secret"/> until then).
    /// </summary>
    private bool WriteString(byte[] value)
    {
        if (AstringWriter.ChooseForm(value) == AstringForm.Quoted)
        {
            AstringWriter.WriteQuoted(Output, value);
            return false;
        }

        AstringWriter.WriteLiteralHeader(Output, value.Length, _literalPlus);
        if (!_literalPlus)
        {
            _secret = value;
            _secretOwned = false;
            return true;
        }

        Write(value);
        return false;
    }

    /// <summary>Waiting for the backend's "+" before a credential; a tagged answer instead ends the login.</summary>
    private BackendStep OnContinuation(ReadOnlySpan<byte> line)
    {
        if (!ResponseLine.TryParse(line, out var response))
        {
            return Fail(BackendLoginOutcome.Unavailable, "unparseable response during login", "refused");
        }

        if (response.Kind == ResponseKind.Untagged && response.Status == ImapStatus.Bye)
        {
            return Fail(BackendLoginOutcome.Unavailable, "backend said BYE during login", "refused");
        }

        if (response.Kind == ResponseKind.Tagged && IsExpected(response.Tag))
        {
            // A refusal is recorded by Classify; a success without the credentials is a backend to distrust.
            return Classify(response, null) == BackendLoginOutcome.Success
                ? Fail(BackendLoginOutcome.Unavailable, "backend completed the login without the credentials", "refused")
                : BackendStep.Done;
        }

        if (response.Kind != ResponseKind.Continuation)
        {
            return BackendStep.ReadLine;
        }

        var secret = _secret!;
        _secret = null;
        Write(secret);
        switch (_state)
        {
            case State.PlainContinuation:
                Array.Clear(secret); // encoded for this login only (the credentials' own arrays stay with them)
                Write("\r\n"u8);
                _state = State.AuthenticationAnswer;
                return BackendStep.Send;

            case State.UserContinuation:
                return ContinueLoginAfterUser();

            default:
                Write("\r\n"u8);
                _state = State.AuthenticationAnswer;
                return BackendStep.Send;
        }
    }

    private BackendStep OnAuthenticationAnswer(ReadOnlySpan<byte> line)
    {
        if (!ResponseLine.TryParse(line, out var response))
        {
            return Fail(BackendLoginOutcome.Unavailable, "unparseable response to authentication", "refused");
        }

        switch (response.Kind)
        {
            case ResponseKind.Continuation:
                // PLAIN needs no further round; cancel whatever the backend is asking for.
                Write("*\r\n"u8);
                return BackendStep.Send;

            case ResponseKind.Untagged when response.Status == ImapStatus.Bye:
                return Fail(BackendLoginOutcome.Unavailable, "backend said BYE during login", "refused");

            case ResponseKind.Untagged when !response.DataCapabilities.IsEmpty:
                _postLogin = response.DataCapabilities.ToArray();
                return BackendStep.ReadLine;

            case ResponseKind.Tagged when IsExpected(response.Tag):
                if (Classify(response, _postLogin) != BackendLoginOutcome.Success)
                {
                    return BackendStep.Done;
                }

                if (Capabilities is { } capabilities)
                {
                    return Succeed(capabilities);
                }

                _postLogin = null;
                return AskCapabilities(State.PostLoginCapabilities);

            default:
                // ID's untagged and tagged answers, and anything else unsolicited.
                return BackendStep.ReadLine;
        }
    }

    /// <summary>
    /// The tagged answer to the credentials: success (its capabilities, from the answer's code or an untagged line
    /// before it, in <see cref="Capabilities"/>), or the failure recorded as the outcome.
    /// </summary>
    private BackendLoginOutcome Classify(ResponseLine response, byte[]? untaggedCapabilities)
    {
        if (response.Status == ImapStatus.Ok)
        {
            Capabilities = response.CodeCapabilities.IsEmpty ? untaggedCapabilities : response.CodeCapabilities.ToArray();
            return BackendLoginOutcome.Success;
        }

        var code = response.CodeName;
        if (response.Status == ImapStatus.Bad)
        {
            Fail(BackendLoginOutcome.Unavailable, "backend answered BAD to the login", "refused");
        }
        else if (Ascii.EqualsIgnoreCase(code, "UNAVAILABLE"u8) || Ascii.EqualsIgnoreCase(code, "SERVERBUG"u8))
        {
            Fail(BackendLoginOutcome.Unavailable, "backend: " + Encoding.ASCII.GetString(code), "refused");
        }
        else if (Ascii.EqualsIgnoreCase(code, "LIMIT"u8))
        {
            Fail(BackendLoginOutcome.Limit, "backend: LIMIT", "refused");
        }
        else
        {
            Fail(BackendLoginOutcome.AuthenticationFailed, code.IsEmpty ? "backend: NO" : "backend: " + Encoding.ASCII.GetString(code), null);
        }

        return Outcome;
    }

    private BackendStep AskCapabilities(State next)
    {
        WriteSimpleCommand("CAPABILITY"u8);
        _state = next;
        return BackendStep.Send;
    }

    private BackendStep Succeed(byte[] capabilities)
    {
        Capabilities = capabilities;
        Outcome = BackendLoginOutcome.Success;
        _state = State.Done;
        return BackendStep.Done;
    }

    private BackendStep Fail(BackendLoginOutcome outcome, string detail, string? errorType = "protocol")
    {
        Outcome = outcome;
        Detail = detail;
        ErrorType = errorType;
        Capabilities = null;
        _state = State.Done;
        return BackendStep.Done;
    }

    private int NextTag() => ++_lastTag;

    /// <summary>Whether <paramref name="tag"/> is the awaited command's ("P" and its number).</summary>
    private bool IsExpected(ReadOnlySpan<byte> tag) =>
        tag.Length > 1 && tag[0] == (byte)'P' && Utf8Parser.TryParse(tag[1..], out int number, out var consumed) &&
        consumed == tag.Length - 1 && number == _expectedTag;

    private void WriteTag(int tag)
    {
        var span = Output.GetSpan(12);
        span[0] = (byte)'P';
        Utf8Formatter.TryFormat(tag, span[1..], out var written);
        Output.Advance(written + 1);
    }

    private void WriteSimpleCommand(ReadOnlySpan<byte> command)
    {
        _expectedTag = NextTag();
        WriteTag(_expectedTag);
        Write(" "u8);
        Write(command);
        Write("\r\n"u8);
    }

    private void Write(ReadOnlySpan<byte> bytes) => ResponseWriter.Write(Output, bytes);

    private void WriteId(int tag)
    {
        WriteTag(tag);
        Write(" ID ("u8);
        Span<byte> text = stackalloc byte[128]; // the longest IPv6 address with a scope is 65 characters
        WritePair("x-originating-ip"u8, Utf8(Normalize(_endpoints.Client.Address), text), first: true);
        WritePair("x-originating-port"u8, Utf8(_endpoints.Client.Port, text));
        WritePair("x-connected-ip"u8, Utf8(Normalize(_endpoints.Local.Address), text));
        WritePair("x-connected-port"u8, Utf8(_endpoints.Local.Port, text));
        WritePair("x-session-id"u8, _sessionId.Length <= text.Length ? text[..Encoding.ASCII.GetBytes(_sessionId, text)] : Encoding.ASCII.GetBytes(_sessionId));
        WritePair("x-proxy-ttl"u8, Utf8(_ttl - 1, text));
        foreach (var (key, value) in _identity.Fields)
        {
            // The proxy's own fields are never taken from the client (Dovecot trusts them from the proxy).
            if (IsReservedField(key) || AstringWriter.ChooseForm(key) != AstringForm.Quoted)
            {
                continue;
            }

            if (value is not null && AstringWriter.ChooseForm(value) != AstringForm.Quoted && !_literalPlus)
            {
                continue;
            }

            Write(" "u8);
            AstringWriter.WriteQuoted(Output, key);
            Write(" "u8);
            if (value is null)
            {
                Write("NIL"u8);
            }
            else if (AstringWriter.ChooseForm(value) == AstringForm.Quoted)
            {
                AstringWriter.WriteQuoted(Output, value);
            }
            else
            {
                AstringWriter.WriteLiteralHeader(Output, value.Length, nonSynchronising: true);
                Write(value);
            }
        }

        Write(")\r\n"u8);
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

    private void WritePair(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, bool first = false)
    {
        if (!first)
        {
            Write(" "u8);
        }

        AstringWriter.WriteQuoted(Output, key);
        Write(" "u8);
        AstringWriter.WriteQuoted(Output, value);
    }

    /// <summary>A number or an address as text, formatted into <paramref name="into"/> (no string on the way).</summary>
    private static ReadOnlySpan<byte> Utf8<T>(T value, Span<byte> into)
        where T : IUtf8SpanFormattable =>
        value.TryFormat(into, out var written, default, System.Globalization.CultureInfo.InvariantCulture)
            ? into[..written]
            : throw new InvalidOperationException($"{typeof(T).Name} does not fit {into.Length} bytes");

    private static IPAddress Normalize(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;
}

/// <summary>What every hand-over's dialogue shares: the proxy's settings for backends.</summary>
internal sealed record BackendDialogueSettings(bool ForwardClientId, byte[]? MasterUser, byte[]? MasterPassword);
