using System.Net;
using System.Text;
using ImapProxy.Backends;
using ImapProxy.Configuration;
using ImapProxy.Protocol.PreAuth;
using ImapProxy.Protocol.Sasl;
using Xunit;

namespace ImapProxy.Tests.Backends;

/// <summary>
/// The hand-over's IMAP dialogue on its own, byte for byte: what it sends for each backend answer, and how it ends. Both
/// drivers (the streams' and the epoll engine's) speak through it, so these are the wire of every login.
/// </summary>
public sealed class BackendLoginDialogueTests
{
    private const string SessionId = "0123456789abcdef0123456789abcdef";
    private static readonly ClientEndpoints s_endpoints = new(new IPEndPoint(IPAddress.Parse("192.0.2.7"), 50123), new IPEndPoint(IPAddress.Parse("127.0.0.1"), 143));
    private static readonly string s_id = $"P1 ID (\"x-originating-ip\" \"192.0.2.7\" \"x-originating-port\" \"50123\" \"x-connected-ip\" \"127.0.0.1\" \"x-connected-port\" \"143\" \"x-session-id\" \"{SessionId}\" \"x-proxy-ttl\" \"4\")\r\n";

    [Fact]
    public void GreetingWithSaslIr_SendsIdAndAuthenticatePlain_InOneWrite_AndTakesTheCapabilitiesOfTheOk()
    {
        using var dialogue = Create();

        Assert.Equal(BackendStep.Send, dialogue.OnLine("* OK [CAPABILITY IMAP4rev1 ID SASL-IR AUTH=PLAIN LITERAL+] ready"u8));
        Assert.True(dialogue.Authenticating);
        Assert.Equal(s_id + "P2 AUTHENTICATE PLAIN AGFsaWNlAHMzY3JldA==\r\n", Sent(dialogue));

        Assert.Equal(BackendStep.ReadLine, dialogue.OnLine("P1 OK ID completed"u8));
        Assert.Equal(BackendStep.Done, dialogue.OnLine("P2 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in"u8));

        Assert.Equal(BackendLoginOutcome.Success, dialogue.Outcome);
        Assert.Equal("IMAP4rev1 IDLE MOVE", Encoding.ASCII.GetString(dialogue.Capabilities!));
    }

    [Fact]
    public void GreetingWithoutCapabilities_AsksForThem_BeforeAuthenticating()
    {
        using var dialogue = Create(forwardId: false);

        Assert.Equal(BackendStep.Send, dialogue.OnLine("* OK ready"u8));
        Assert.False(dialogue.Authenticating);
        Assert.Equal("P1 CAPABILITY\r\n", Sent(dialogue));
        Assert.Equal(BackendStep.ReadLine, dialogue.OnLine("* CAPABILITY IMAP4rev1 AUTH=PLAIN"u8));
        Assert.Equal(BackendStep.Send, dialogue.OnLine("P1 OK done"u8));
        Assert.True(dialogue.Authenticating);

        // No SASL-IR: the message follows the backend's continuation.
        Assert.Equal("P2 AUTHENTICATE PLAIN\r\n", Sent(dialogue));
        Assert.Equal(BackendStep.Send, dialogue.OnLine("+ "u8));
        Assert.Equal("AGFsaWNlAHMzY3JldA==\r\n", Sent(dialogue));

        // No capabilities with the OK: asked for after the login.
        Assert.Equal(BackendStep.Send, dialogue.OnLine("P2 OK Logged in"u8));
        Assert.Equal("P3 CAPABILITY\r\n", Sent(dialogue));
        Assert.Equal(BackendStep.ReadLine, dialogue.OnLine("* CAPABILITY IMAP4rev1 QUOTA"u8));
        Assert.Equal(BackendStep.Done, dialogue.OnLine("P3 OK done"u8));
        Assert.Equal(BackendLoginOutcome.Success, dialogue.Outcome);
        Assert.Equal("IMAP4rev1 QUOTA", Encoding.ASCII.GetString(dialogue.Capabilities!));
    }

    [Fact]
    public void Login_WithoutLiteralPlus_SendsEachLiteralCredential_OnlyAfterTheBackendsContinuation()
    {
        using var dialogue = Create(password: "p\"w\r\nx", forwardId: false, authentication: BackendAuthentication.Login);

        Assert.Equal(BackendStep.Send, dialogue.OnLine("* OK [CAPABILITY IMAP4rev1] ready"u8));
        Assert.Equal("P1 LOGIN \"alice\" {6}\r\n", Sent(dialogue));

        // An unrelated line is not a continuation.
        Assert.Equal(BackendStep.ReadLine, dialogue.OnLine("* 1 EXISTS"u8));
        Assert.Equal(BackendStep.Send, dialogue.OnLine("+ go ahead"u8));
        Assert.Equal("p\"w\r\nx\r\n", Sent(dialogue));
        Assert.Equal(BackendStep.Done, dialogue.OnLine("P1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in"u8));
        Assert.Equal(BackendLoginOutcome.Success, dialogue.Outcome);
    }

    [Fact]
    public void Login_WithLiteralPlus_SendsTheWholeCommandAtOnce()
    {
        using var dialogue = Create(user: "al ice\u00e9", forwardId: false, authentication: BackendAuthentication.Login);

        Assert.Equal(BackendStep.Send, dialogue.OnLine("* OK [CAPABILITY IMAP4rev1 LITERAL+] ready"u8));
        // Eight bits make the user a literal (8 bytes in UTF-8), sent with the rest: no continuation is waited for.
        Assert.Equal(Encoding.UTF8.GetBytes("P1 LOGIN {8+}\r\nal ice\u00e9 \"s3cret\"\r\n"), dialogue.Output.WrittenSpan.ToArray());
    }

    [Theory]
    [InlineData("P2 NO [AUTHENTICATIONFAILED] Authentication failed.", "AuthenticationFailed", null)]
    [InlineData("P2 NO Authentication failed.", "AuthenticationFailed", null)]
    [InlineData("P2 NO [UNAVAILABLE] Try later", "Unavailable", "refused")]
    [InlineData("P2 NO [SERVERBUG] Oops", "Unavailable", "refused")]
    [InlineData("P2 NO [LIMIT] Too many", "Limit", "refused")]
    [InlineData("P2 BAD Syntax", "Unavailable", "refused")]
    [InlineData("* BYE going away", "Unavailable", "refused")]
    [InlineData("nonsense", "Unavailable", "refused")]
    public void TheLoginsAnswer_IsClassified(string answer, string outcome, string? errorType)
    {
        using var dialogue = Create();
        Assert.Equal(BackendStep.Send, dialogue.OnLine("* OK [CAPABILITY IMAP4rev1 ID SASL-IR AUTH=PLAIN] ready"u8));
        Sent(dialogue);

        Assert.Equal(BackendStep.Done, dialogue.OnLine(Encoding.ASCII.GetBytes(answer)));
        Assert.Equal(Enum.Parse<BackendLoginOutcome>(outcome), dialogue.Outcome);
        Assert.Equal(errorType, dialogue.ErrorType);
        Assert.Null(dialogue.Capabilities);
        Assert.DoesNotContain("Try later", dialogue.Detail, StringComparison.Ordinal); // no backend text beyond its code
    }

    [Theory]
    [InlineData("* BYE Too busy")]
    [InlineData("* PREAUTH [CAPABILITY IMAP4rev1] Logged in")]
    [InlineData("* NO not today")]
    [InlineData("HTTP/1.1 400 Bad Request")]
    public void AGreetingThatIsNotOk_EndsIt_Unavailable(string greeting)
    {
        using var dialogue = Create();

        Assert.Equal(BackendStep.Done, dialogue.OnLine(Encoding.ASCII.GetBytes(greeting)));
        Assert.Equal(BackendLoginOutcome.Unavailable, dialogue.Outcome);
        Assert.Equal("protocol", dialogue.ErrorType);
        Assert.Equal(0, dialogue.Output.WrittenCount);
    }

    [Fact]
    public void StartTls_IsAskedFor_ThenTheCapabilitiesAgain()
    {
        using var dialogue = Create(forwardId: false, tls: BackendTls.StartTls);

        Assert.Equal(BackendStep.Send, dialogue.OnLine("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready"u8));
        Assert.Equal("P1 STARTTLS\r\n", Sent(dialogue));
        Assert.Equal(BackendStep.StartTls, dialogue.OnLine("P1 OK Begin TLS negotiation now"u8));
        Assert.Equal(BackendStep.Send, dialogue.OnTlsEstablished());
        Assert.Equal("P2 CAPABILITY\r\n", Sent(dialogue));
        Assert.Equal(BackendStep.ReadLine, dialogue.OnLine("* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR"u8));
        Assert.Equal(BackendStep.Send, dialogue.OnLine("P2 OK done"u8));
        Assert.Equal("P3 AUTHENTICATE PLAIN AGFsaWNlAHMzY3JldA==\r\n", Sent(dialogue));
    }

    [Fact]
    public void LoginDisabled_WithoutPlain_IsUnavailable_AndNoCredentialIsWritten()
    {
        using var dialogue = Create(forwardId: false);

        Assert.Equal(BackendStep.Done, dialogue.OnLine("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] ready"u8));
        Assert.Equal(BackendLoginOutcome.Unavailable, dialogue.Outcome);
        Assert.Equal(0, dialogue.Output.WrittenCount);
    }

    [Fact]
    public void TheMasterUser_LogsInForTheClientsUser_ThroughPlain()
    {
        using var dialogue = Create(forwardId: false, master: ("master", "m-pass"));

        Assert.Equal(BackendStep.Send, dialogue.OnLine("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready"u8));
        var sent = Sent(dialogue);
        var encoded = sent["P1 AUTHENTICATE PLAIN ".Length..^2];
        Assert.Equal("alice\0master\0m-pass", Encoding.ASCII.GetString(Convert.FromBase64String(encoded)));
    }

    [Fact]
    public void AContinuationDuringTheLoginsAnswer_IsCancelled()
    {
        using var dialogue = Create(forwardId: false);
        dialogue.OnLine("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready"u8);
        Sent(dialogue);

        Assert.Equal(BackendStep.Send, dialogue.OnLine("+ more?"u8));
        Assert.Equal("*\r\n", Sent(dialogue));
    }

    [Fact]
    public void ATaggedAnswerInsteadOfTheContinuation_EndsTheLogin_WithoutTheCredential()
    {
        using var dialogue = Create(forwardId: false, authentication: BackendAuthentication.Login, password: "a\"b\\c\r\n");
        dialogue.OnLine("* OK [CAPABILITY IMAP4rev1] ready"u8);
        Sent(dialogue);

        Assert.Equal(BackendStep.Done, dialogue.OnLine("P1 OK Logged in without a password"u8));
        Assert.Equal(BackendLoginOutcome.Unavailable, dialogue.Outcome);
        Assert.Equal(0, dialogue.Output.WrittenCount);
    }

    [Fact]
    public void AnEndWhileACredentialWaitsForItsContinuation_LeavesTheClientsCredentialsAlone()
    {
        // The hand-over may be tried again on another backend with the same credentials.
        var credentials = new ImapCredentials(LoginMechanism.LoginCommand, "alice"u8.ToArray(), Encoding.UTF8.GetBytes("p\u00e4ss"));
        var dialogue = new BackendLoginDialogue(
            new BackendDialogueSettings(false, null, null),
            new BackendEndpoint("b1", "127.0.0.1", 143, 1, authentication: BackendAuthentication.Login),
            credentials,
            ClientIdentity.Empty,
            s_endpoints,
            SessionId,
            ttl: 5);
        Assert.Equal(BackendStep.Send, dialogue.OnLine("* OK [CAPABILITY IMAP4rev1] ready"u8));
        Assert.Equal("P1 LOGIN \"alice\" {5}\r\n", Sent(dialogue));

        dialogue.Dispose(); // a time limit, say, before the backend's "+"

        Assert.Equal("p\u00e4ss", Encoding.UTF8.GetString(credentials.Password));
    }

    private static BackendLoginDialogue Create(
        string user = "alice",
        string password = "s3cret",
        bool forwardId = true,
        BackendAuthentication authentication = BackendAuthentication.Auto,
        BackendTls tls = BackendTls.None,
        (string User, string Password)? master = null)
    {
        var settings = new BackendDialogueSettings(
            forwardId,
            master is { } m ? Encoding.UTF8.GetBytes(m.User) : null,
            master is { } n ? Encoding.UTF8.GetBytes(n.Password) : null);
        var backend = new BackendEndpoint("b1", "127.0.0.1", 143, 1, tls, authentication: authentication);
        var credentials = new ImapCredentials(LoginMechanism.LoginCommand, Encoding.UTF8.GetBytes(user), Encoding.UTF8.GetBytes(password));
        return new BackendLoginDialogue(settings, backend, credentials, ClientIdentity.Empty, s_endpoints, SessionId, ttl: 5);
    }

    /// <summary>What the dialogue asked to send, as the driver sends it (and clears the buffer).</summary>
    private static string Sent(BackendLoginDialogue dialogue)
    {
        var text = Encoding.ASCII.GetString(dialogue.Output.WrittenSpan);
        dialogue.Output.Clear();
        return text;
    }
}
