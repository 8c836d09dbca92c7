using System.Buffers;
using ImapProxy.Protocol.Parsing;
using ImapProxy.Protocol.Responses;
using ImapProxy.Protocol.Sasl;

namespace ImapProxy.Protocol.PreAuth;

public enum PreAuthState
{
    /// <summary>Waiting for (or inside) a command.</summary>
    Command,
    /// <summary>AUTHENTICATE PLAIN sent "+ "; the next line is the client's response.</summary>
    SaslPlainResponse,
    /// <summary>AUTHENTICATE LOGIN asked for the user name.</summary>
    SaslLoginUser,
    /// <summary>AUTHENTICATE LOGIN asked for the password.</summary>
    SaslLoginPassword,
    /// <summary>Credentials handed to the session; no input is read until it reports the outcome.</summary>
    LoginPending,
    /// <summary>STARTTLS accepted; no input is read until the handshake is done.</summary>
    StartTlsPending,
    Closed,
}

/// <summary>What the session has to do after <see cref="PreAuthMachine.Advance"/>.</summary>
public enum PreAuthStep
{
    /// <summary>Flush the output and read more input: what is left unread is an incomplete line.</summary>
    NeedMoreInput,
    /// <summary>Flush the "OK Begin TLS" response, discard any buffered input, run the TLS handshake.</summary>
    StartTls,
    /// <summary>Credentials are in <see cref="PreAuthMachine.PendingLogin"/>: find the backend and log in.</summary>
    Login,
    /// <summary>Flush the output and close the connection (see <see cref="PreAuthMachine.CloseReason"/>).</summary>
    Close,
}

public enum PreAuthCloseReason
{
    None,
    Logout,
    TooManyErrors,
    ProtocolViolation,
}

public enum LoginFailure
{
    AuthenticationFailed,
    Unavailable,
    Limit,
}

/// <summary>A login the session has to carry out: the client's tag and its credentials.</summary>
public sealed class LoginRequest : IDisposable
{
    public LoginRequest(byte[] tag, ImapCredentials credentials)
    {
        Tag = tag;
        Credentials = credentials;
    }

    public byte[] Tag { get; }

    public ImapCredentials Credentials { get; }

    public void Dispose() => Credentials.Dispose();
}

/// <summary>
/// The proxy's own IMAP server before authentication (DESIGN §3), as a state machine over input bytes. It
/// writes its responses to the output it is given and tells the session, through <see cref="PreAuthStep"/>,
/// when I/O beyond that is needed (TLS, a backend login, closing). Driven correctly by any split of input.
/// </summary>
public sealed class PreAuthMachine
{
    private static readonly byte[] s_usernameChallenge = "VXNlcm5hbWU6"u8.ToArray(); // "Username:"
    private static readonly byte[] s_passwordChallenge = "UGFzc3dvcmQ6"u8.ToArray(); // "Password:"

    private readonly PreAuthSettings _settings;
    private readonly ImapCommandParser _parser;
    private readonly bool _plaintextAllowedWithoutTls;
    private bool _tlsActive;
    private bool _startTlsOffered;
    private int _errors;
    private byte[] _saslTag = [];
    private byte[]? _saslUser;

    /// <param name="settings">Shared settings.</param>
    /// <param name="tlsActive">TLS already protects the connection (implicit TLS listener).</param>
    /// <param name="startTlsOffered">The listener offers STARTTLS (plain listener with a certificate).</param>
    /// <param name="plaintextAllowedWithoutTls">The client is in a trusted network.</param>
    public PreAuthMachine(PreAuthSettings settings, bool tlsActive, bool startTlsOffered, bool plaintextAllowedWithoutTls)
    {
        ArgumentNullException.ThrowIfNull(settings);
        _settings = settings;
        _parser = new ImapCommandParser(settings.Limits);
        _tlsActive = tlsActive;
        _startTlsOffered = startTlsOffered && !tlsActive;
        _plaintextAllowedWithoutTls = plaintextAllowedWithoutTls;
    }

    public PreAuthState State { get; private set; } = PreAuthState.Command;

    public PreAuthCloseReason CloseReason { get; private set; }

    /// <summary>Set when <see cref="Advance"/> returned <see cref="PreAuthStep.Login"/>; owned by the session.</summary>
    public LoginRequest? PendingLogin { get; private set; }

    /// <summary>The client's ID fields, if it sent ID.</summary>
    public ClientIdentity ClientIdentity { get; private set; } = ClientIdentity.Empty;

    public bool TlsActive => _tlsActive;

    private bool PlaintextAllowed => _tlsActive || _plaintextAllowedWithoutTls;

    private ReadOnlySpan<byte> CurrentCapabilities => _settings.Capabilities(_startTlsOffered, PlaintextAllowed);

    public void WriteGreeting(IBufferWriter<byte> output)
    {
        ResponseWriter.Write(output, "* OK [CAPABILITY "u8);
        ResponseWriter.Write(output, CurrentCapabilities);
        ResponseWriter.Write(output, "] "u8);
        ResponseWriter.Write(output, _settings.GreetingText);
        ResponseWriter.Write(output, ImapBytes.CrLf);
    }

    /// <summary>
    /// Processes input until a step needs the session. Responses for the commands handled are written to
    /// <paramref name="output"/>; the caller flushes it.
    /// </summary>
    public PreAuthStep Advance(ref SequenceReader<byte> input, IBufferWriter<byte> output)
    {
        ArgumentNullException.ThrowIfNull(output);
        while (true)
        {
            var step = State switch
            {
                PreAuthState.Command => AdvanceCommand(ref input, output),
                PreAuthState.SaslPlainResponse or PreAuthState.SaslLoginUser or PreAuthState.SaslLoginPassword => AdvanceSasl(ref input, output),
                PreAuthState.Closed => PreAuthStep.Close,
                _ => throw new InvalidOperationException($"Advance called in state {State}."),
            };

            if (step is not null)
            {
                return step.Value;
            }
        }
    }

    /// <summary>The TLS handshake after STARTTLS succeeded: capabilities change, the dialogue resumes.</summary>
    public void OnTlsEstablished()
    {
        if (State != PreAuthState.StartTlsPending)
        {
            throw new InvalidOperationException("No STARTTLS is pending.");
        }

        _tlsActive = true;
        _startTlsOffered = false;
        _parser.Reset();
        State = PreAuthState.Command;
    }

    /// <summary>The login failed: answer the client with the proxy's own text and go back to the dialogue.</summary>
    public void OnLoginFailed(IBufferWriter<byte> output, LoginFailure failure)
    {
        var request = TakePendingLogin();
        try
        {
            switch (failure)
            {
                case LoginFailure.Unavailable:
                    ResponseWriter.WriteTagged(output, request.Tag, ImapStatus.No, "UNAVAILABLE"u8, "Server unavailable, try again later."u8);
                    break;
                case LoginFailure.Limit:
                    ResponseWriter.WriteTagged(output, request.Tag, ImapStatus.No, "LIMIT"u8, "Too many connections, try again later."u8);
                    break;
                default:
                    ResponseWriter.WriteTagged(output, request.Tag, ImapStatus.No, "AUTHENTICATIONFAILED"u8, "Authentication failed."u8);
                    break;
            }
        }
        finally
        {
            request.Dispose();
        }

        State = PreAuthState.Command;
    }

    /// <summary>The login succeeded: the session takes the request and the machine is done.</summary>
    public LoginRequest OnLoginSucceeded()
    {
        var request = TakePendingLogin();
        State = PreAuthState.Closed;
        return request;
    }

    private LoginRequest TakePendingLogin()
    {
        if (State != PreAuthState.LoginPending || PendingLogin is null)
        {
            throw new InvalidOperationException("No login is pending.");
        }

        var request = PendingLogin;
        PendingLogin = null;
        return request;
    }

    private PreAuthStep? AdvanceCommand(ref SequenceReader<byte> input, IBufferWriter<byte> output)
    {
        switch (_parser.TryParse(ref input, out var command, out var error))
        {
            case ParseStatus.NeedMoreData:
                return PreAuthStep.NeedMoreInput;

            case ParseStatus.ContinuationRequired when _parser.PendingCommand == ImapCommandName.Login && !PlaintextAllowed:
                // Never invite a password in the clear: refuse instead of sending "+" (RFC 3501 §7.5).
                var tag = _parser.PendingTag;
                _parser.Reset();
                ResponseWriter.WriteTagged(output, tag, ImapStatus.No, "PRIVACYREQUIRED"u8, "Plaintext authentication disallowed on non-secure connections."u8);
                return null;

            case ParseStatus.ContinuationRequired:
                // Keep parsing: the literal may already be buffered, and a session waiting for new bytes would
                // then stall. If it is not, the parser asks for more and the continuation is flushed with that.
                ResponseWriter.WriteContinuation(output, "Ready for literal data"u8);
                return null;

            case ParseStatus.Error:
                return ReportError(output, error);

            default:
                return Execute(command!, output);
        }
    }

    private PreAuthStep? ReportError(IBufferWriter<byte> output, ParseError error)
    {
        if (error.Fatal)
        {
            WriteBye(output, error.ResponseCode, error.Message);
            return Close(PreAuthCloseReason.ProtocolViolation);
        }

        var tag = error.Tag ?? "*"u8.ToArray();
        if (error.Kind == ParseErrorKind.NotAvailable)
        {
            // A well-formed command that needs authentication: the connection stays usable (DESIGN §3). The
            // error budget is for malformed and oversized input.
            WriteBad(output, tag, null, "Command requires authentication.");
            return null;
        }

        WriteBad(output, tag, error.ResponseCode, error.Message);
        return CountError(output);
    }

    private PreAuthStep? Execute(ImapCommand command, IBufferWriter<byte> output)
    {
        var tag = command.Tag;
        switch (command.Name)
        {
            case ImapCommandName.Capability when command.Arguments.Count == 0:
                ResponseWriter.Write(output, "* CAPABILITY "u8);
                ResponseWriter.Write(output, CurrentCapabilities);
                ResponseWriter.Write(output, ImapBytes.CrLf);
                ResponseWriter.WriteTagged(output, tag, ImapStatus.Ok, default, "Capability completed."u8);
                return null;

            case ImapCommandName.Noop when command.Arguments.Count == 0:
                ResponseWriter.WriteTagged(output, tag, ImapStatus.Ok, default, "NOOP completed."u8);
                return null;

            case ImapCommandName.Logout when command.Arguments.Count == 0:
                ResponseWriter.WriteUntaggedStatus(output, ImapStatus.Bye, default, "Logging out."u8);
                ResponseWriter.WriteTagged(output, tag, ImapStatus.Ok, default, "Logout completed."u8);
                return Close(PreAuthCloseReason.Logout);

            case ImapCommandName.Id:
                if (!ClientIdentity.TryCreate(command.Arguments, out var identity))
                {
                    WriteBad(output, tag, "CLIENTBUG", "Invalid ID arguments.");
                    return CountError(output);
                }

                ClientIdentity = identity;
                ResponseWriter.WriteUntagged(output, _settings.IdResponse);
                ResponseWriter.WriteTagged(output, tag, ImapStatus.Ok, default, "ID completed."u8);
                return null;

            case ImapCommandName.StartTls when command.Arguments.Count == 0:
                if (!_startTlsOffered)
                {
                    WriteBad(output, tag, null, _tlsActive ? "TLS is already active." : "STARTTLS is not available.");
                    return CountError(output);
                }

                ResponseWriter.WriteTagged(output, tag, ImapStatus.Ok, default, "Begin TLS negotiation now."u8);
                State = PreAuthState.StartTlsPending;
                return PreAuthStep.StartTls;

            case ImapCommandName.Login:
                return ExecuteLogin(command, output);

            case ImapCommandName.Authenticate:
                return ExecuteAuthenticate(command, output);

            default:
                command.ClearArguments();
                WriteBad(output, tag, "CLIENTBUG", "Invalid arguments.");
                return CountError(output);
        }
    }

    private PreAuthStep? ExecuteLogin(ImapCommand command, IBufferWriter<byte> output)
    {
        var args = command.Arguments;
        if (args.Count != 2 || !args[0].IsAstring || !args[1].IsAstring)
        {
            command.ClearArguments();
            WriteBad(output, command.Tag, "CLIENTBUG", "LOGIN expects a user name and a password.");
            return CountError(output);
        }

        if (!PlaintextAllowed)
        {
            command.ClearArguments();
            ResponseWriter.WriteTagged(output, command.Tag, ImapStatus.No, "PRIVACYREQUIRED"u8, "Plaintext authentication disallowed on non-secure connections."u8);
            return null;
        }

        return BeginLogin(command.Tag, new ImapCredentials(LoginMechanism.LoginCommand, args[0].Value, args[1].Value), output);
    }

    private PreAuthStep? ExecuteAuthenticate(ImapCommand command, IBufferWriter<byte> output)
    {
        var args = command.Arguments;
        if (args.Count is < 1 or > 2 || args[0].Kind != ImapArgumentKind.Atom || (args.Count == 2 && args[1].Kind != ImapArgumentKind.Atom))
        {
            command.ClearArguments();
            WriteBad(output, command.Tag, "CLIENTBUG", "AUTHENTICATE expects a mechanism and an optional initial response.");
            return CountError(output);
        }

        var mechanism = args[0].Value;
        var isPlain = System.Text.Ascii.EqualsIgnoreCase(mechanism, "PLAIN"u8);
        var isLogin = System.Text.Ascii.EqualsIgnoreCase(mechanism, "LOGIN"u8);
        if (!isPlain && !isLogin)
        {
            command.ClearArguments();
            ResponseWriter.WriteTagged(output, command.Tag, ImapStatus.No, "CANNOT"u8, "Unsupported authentication mechanism."u8);
            return null;
        }

        if (!PlaintextAllowed)
        {
            command.ClearArguments();
            ResponseWriter.WriteTagged(output, command.Tag, ImapStatus.No, "PRIVACYREQUIRED"u8, "Plaintext authentication disallowed on non-secure connections."u8);
            return null;
        }

        _saslTag = command.Tag;
        if (args.Count == 1)
        {
            State = isPlain ? PreAuthState.SaslPlainResponse : PreAuthState.SaslLoginUser;
            ResponseWriter.WriteContinuation(output, isPlain ? default : s_usernameChallenge);
            return null;
        }

        // SASL-IR (RFC 4959): the initial response stands in for the first client response.
        State = isPlain ? PreAuthState.SaslPlainResponse : PreAuthState.SaslLoginUser;
        var initial = args[1].Value;
        try
        {
            return OnSaslResponse(initial, output);
        }
        finally
        {
            Array.Clear(initial);
        }
    }

    private PreAuthStep? AdvanceSasl(ref SequenceReader<byte> input, IBufferWriter<byte> output)
    {
        switch (_parser.TryReadLine(ref input, out var line))
        {
            case ParseStatus.NeedMoreData:
                return PreAuthStep.NeedMoreInput;
            case ParseStatus.Error:
                EndSasl();
                WriteBad(output, _saslTag, "TOOBIG", "Authentication response too long.");
                return CountError(output);
        }

        var bytes = line.ToArray();
        try
        {
            if (bytes is [ImapBytes.Star])
            {
                EndSasl();
                WriteBad(output, _saslTag, null, "Authentication cancelled.");
                return null;
            }

            return OnSaslResponse(bytes, output);
        }
        finally
        {
            Array.Clear(bytes);
        }
    }

    private PreAuthStep? OnSaslResponse(ReadOnlySpan<byte> base64, IBufferWriter<byte> output)
    {
        var tag = _saslTag;
        if (SaslCodec.TryDecodeBase64(base64, out var decoded) != SaslDecodeResult.Ok)
        {
            EndSasl();
            WriteBad(output, tag, "CLIENTBUG", "Invalid base64 data.");
            return CountError(output);
        }

        switch (State)
        {
            case PreAuthState.SaslPlainResponse:
                EndSasl();
                var result = SaslCodec.TryParsePlain(decoded, out var credentials);
                Array.Clear(decoded);
                if (result != SaslDecodeResult.Ok)
                {
                    ResponseWriter.WriteTagged(output, tag, ImapStatus.No, "AUTHENTICATIONFAILED"u8, "Authentication failed."u8);
                    return null;
                }

                return BeginLogin(tag, credentials!, output);

            case PreAuthState.SaslLoginUser:
                _saslUser = decoded;
                State = PreAuthState.SaslLoginPassword;
                ResponseWriter.WriteContinuation(output, s_passwordChallenge);
                return null;

            default:
                var user = _saslUser ?? [];
                _saslUser = null;
                EndSasl();
                return BeginLogin(tag, new ImapCredentials(LoginMechanism.SaslLogin, user, decoded), output);
        }
    }

    private PreAuthStep? BeginLogin(byte[] tag, ImapCredentials credentials, IBufferWriter<byte> output)
    {
        if (!credentials.IsWellFormed)
        {
            credentials.Dispose();
            ResponseWriter.WriteTagged(output, tag, ImapStatus.No, "AUTHENTICATIONFAILED"u8, "Authentication failed."u8);
            return null;
        }

        PendingLogin = new LoginRequest(tag, credentials);
        State = PreAuthState.LoginPending;
        return PreAuthStep.Login;
    }

    private void EndSasl()
    {
        if (_saslUser is not null)
        {
            Array.Clear(_saslUser);
            _saslUser = null;
        }

        State = PreAuthState.Command;
    }

    private PreAuthStep? CountError(IBufferWriter<byte> output)
    {
        if (++_errors <= _settings.ErrorBudget)
        {
            return null;
        }

        WriteBye(output, null, "Too many invalid commands.");
        return Close(PreAuthCloseReason.TooManyErrors);
    }

    private PreAuthStep Close(PreAuthCloseReason reason)
    {
        CloseReason = reason;
        State = PreAuthState.Closed;
        return PreAuthStep.Close;
    }

    private static void WriteBad(IBufferWriter<byte> output, byte[] tag, string? code, string message)
    {
        ResponseWriter.Write(output, tag);
        ResponseWriter.Write(output, " BAD "u8);
        WriteCodeAndText(output, code, message);
    }

    private static void WriteBye(IBufferWriter<byte> output, string? code, string message)
    {
        ResponseWriter.Write(output, "* BYE "u8);
        WriteCodeAndText(output, code, message);
    }

    private static void WriteCodeAndText(IBufferWriter<byte> output, string? code, string message)
    {
        if (code is not null)
        {
            ResponseWriter.Write(output, "["u8);
            ResponseWriter.WriteAscii(output, code);
            ResponseWriter.Write(output, "] "u8);
        }

        ResponseWriter.WriteAscii(output, message);
        ResponseWriter.Write(output, ImapBytes.CrLf);
    }
}
