using System.Buffers;
using System.Text;
using ImapProxy.Protocol.Parsing;
using ImapProxy.Protocol.PreAuth;
using ImapProxy.Protocol.Responses;
using ImapProxy.Protocol.Tests.Parsing;
using ImapProxy.Protocol.Tests.TestSupport;

namespace ImapProxy.Protocol.Tests.PreAuth;

/// <summary>
/// The pre-authentication dialogue (DESIGN §3). Dialogues run with the client's input whole, split at every byte
/// into two reads and into two segments, one byte per read and one byte per segment: all give the same transcript.
/// </summary>
public sealed class PreAuthMachineTests
{
    private const string IdReply = "* ID (\"name\" \"ImapProxy\" \"version\" \"1.0\")";

    private static PreAuthMachine Tls() => Tls(Dialogue.Settings());

    private static PreAuthMachine Tls(PreAuthSettings settings) => new(settings, tlsActive: true, startTlsOffered: false, plaintextAllowedWithoutTls: false);

    private static PreAuthMachine Plain() => Plain(Dialogue.Settings());

    private static PreAuthMachine Plain(PreAuthSettings settings) => new(settings, tlsActive: false, startTlsOffered: true, plaintextAllowedWithoutTls: false);

    private static PreAuthMachine Trusted() => new(Dialogue.Settings(), tlsActive: false, startTlsOffered: true, plaintextAllowedWithoutTls: true);

    private static void Expect(Func<PreAuthMachine> machine, string input, params string[] transcript)
    {
        var dialogue = Dialogue.RunAllSplits(machine, input);
        Dialogue.AssertTranscript(transcript, dialogue.Transcript);
    }

    private static string Base64(string text) => Convert.ToBase64String(Encoding.Latin1.GetBytes(text));

    // ---- Greeting and capabilities -------------------------------------------------------------------------

    public static TheoryData<bool, bool, bool, string> GreetingCases => new()
    {
        // tlsActive, startTlsOffered, trusted, the capabilities beyond IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE
        { false, true, false, "STARTTLS LOGINDISABLED" },
        { false, false, false, "LOGINDISABLED" },
        { false, true, true, "STARTTLS AUTH=PLAIN AUTH=LOGIN" },
        { false, false, true, "AUTH=PLAIN AUTH=LOGIN" },
        { true, false, false, "AUTH=PLAIN AUTH=LOGIN" },
        { true, true, false, "AUTH=PLAIN AUTH=LOGIN" },
        { true, true, true, "AUTH=PLAIN AUTH=LOGIN" },
    };

    [Theory]
    [MemberData(nameof(GreetingCases))]
    public void WriteGreeting_CapabilitiesFollowTheConnectionState(bool tlsActive, bool startTlsOffered, bool trusted, string stateCapabilities)
    {
        var machine = new PreAuthMachine(Dialogue.Settings(), tlsActive, startTlsOffered, trusted);
        var output = new ArrayBufferWriter<byte>();

        machine.WriteGreeting(output);

        var text = Splits.Text(output.WrittenSpan);
        Assert.EndsWith("\r\n", text, StringComparison.Ordinal);
        Assert.Equal(1, text.Split("\r\n").Length - 1);
        Assert.True(ResponseLine.TryParse(output.WrittenSpan[..^2], out var greeting));
        Assert.Equal(ResponseKind.Untagged, greeting.Kind);
        Assert.Equal(ImapStatus.Ok, greeting.Status);
        Assert.Equal("ImapProxy ready.", Splits.Text(greeting.Text));
        AssertCapabilities("IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE " + stateCapabilities, greeting.CodeCapabilities);
    }

    [Fact]
    public void WriteGreeting_Imap4Rev2AndExtras_Advertised()
    {
        var machine = Tls(Dialogue.Settings(imap4Rev2: true, extras: ["XLIST", " ", "CHILDREN ", ""]));
        var output = new ArrayBufferWriter<byte>();

        machine.WriteGreeting(output);

        Assert.True(ResponseLine.TryParse(output.WrittenSpan[..^2], out var greeting));
        AssertCapabilities("IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ID ENABLE IDLE XLIST CHILDREN AUTH=PLAIN AUTH=LOGIN", greeting.CodeCapabilities);
        Assert.DoesNotContain("  ", Splits.Text(output.WrittenSpan), StringComparison.Ordinal);
    }

    [Fact]
    public void Capability_SameListAsTheGreeting()
    {
        var dialogue = Dialogue.RunAllSplits(Plain, "a CAPABILITY\r\n", d => d.Greet());

        var greeting = dialogue.Transcript[0];
        var capabilities = greeting["* OK [CAPABILITY ".Length..greeting.IndexOf(']', StringComparison.Ordinal)];
        Dialogue.AssertTranscript([greeting, "* CAPABILITY " + capabilities, "a OK …"], dialogue.Transcript);
        AssertCapabilities("IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE STARTTLS LOGINDISABLED", Splits.Bytes(capabilities));
    }

    [Fact]
    public void Capability_RecomputedAfterStartTls()
    {
        var dialogue = new Dialogue(Plain());
        dialogue.Feed("a STARTTLS\r\n");
        dialogue.CompleteTls();

        dialogue.Feed("b CAPABILITY\r\n");

        var line = dialogue.Transcript[^2];
        Assert.StartsWith("* CAPABILITY ", line, StringComparison.Ordinal);
        AssertCapabilities("IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE AUTH=PLAIN AUTH=LOGIN", Splits.Bytes(line["* CAPABILITY ".Length..]));
        Assert.StartsWith("b OK ", dialogue.Transcript[^1], StringComparison.Ordinal);
        Assert.True(dialogue.Machine.TlsActive);
    }

    private static void AssertCapabilities(string expected, ReadOnlySpan<byte> actual)
    {
        var tokens = Splits.Text(actual).Split(' ');
        Assert.Equal(expected.Split(' ').Order(StringComparer.Ordinal), tokens.Order(StringComparer.Ordinal));
        Assert.Equal("IMAP4rev1", tokens[0]);
        Assert.False(CapabilityList.Contains(actual, "LITERAL-"u8));
    }

    // ---- CAPABILITY, NOOP, LOGOUT, arguments ---------------------------------------------------------------

    [Fact]
    public void Noop_Ok() => Expect(Plain, "a NOOP\r\n", "a OK NOOP completed.");

    [Fact]
    public void Logout_ByeThenOkThenClose()
    {
        var dialogue = Dialogue.RunAllSplits(Plain, "a LOGOUT\r\nb NOOP\r\n");

        Dialogue.AssertTranscript(["* BYE …", "a OK …", "<Close Logout>"], dialogue.Transcript);
        Assert.Equal(PreAuthCloseReason.Logout, dialogue.Machine.CloseReason);
        Assert.Equal("b NOOP\r\n"u8.ToArray(), dialogue.Unconsumed);
    }

    [Fact]
    public void Advance_AfterClose_ReturnsCloseAndReadsNothing()
    {
        var dialogue = new Dialogue(Plain());
        dialogue.Feed("a LOGOUT\r\n");
        var output = new ArrayBufferWriter<byte>();
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>("b NOOP\r\n"u8.ToArray()));

        Assert.Equal(PreAuthStep.Close, dialogue.Machine.Advance(ref reader, output));

        Assert.Equal(0, reader.Consumed);
        Assert.Equal(0, output.WrittenCount);
    }

    [Fact]
    public void CommandsWithUnexpectedArguments_Bad() => Expect(
        () => Tls(Dialogue.Settings(errorBudget: 10)),
        "a NOOP x\r\nb CAPABILITY \"x\"\r\nc LOGOUT NIL\r\nd STARTTLS x\r\ne NOOP\r\n",
        "a BAD [CLIENTBUG] …",
        "b BAD [CLIENTBUG] …",
        "c BAD [CLIENTBUG] …",
        "d BAD [CLIENTBUG] …",
        "e OK NOOP completed.");

    [Fact]
    public void CaseInsensitiveCommands() => Expect(
        Tls,
        "a noop\r\nb Capability\r\nc iD nIl\r\nd lOgOuT\r\n",
        "a OK NOOP completed.",
        "* CAPABILITY …",
        "b OK …",
        IdReply,
        "c OK …",
        "* BYE …",
        "d OK …",
        "<Close Logout>");

    // ---- ID ------------------------------------------------------------------------------------------------

    [Fact]
    public void Id_Nil_RepliesWithTheProxysId()
    {
        var dialogue = Dialogue.RunAllSplits(Plain, "a ID NIL\r\n");

        Dialogue.AssertTranscript([IdReply, "a OK ID completed."], dialogue.Transcript);
        Assert.Empty(dialogue.Machine.ClientIdentity.Fields);
    }

    [Fact]
    public void Id_Pairs_RepliesAndKeepsTheClientsFields()
    {
        var dialogue = Dialogue.RunAllSplits(Plain, "a ID (\"name\" \"Thunder bird\" \"version\" NIL \"os\" {5}\r\nLinux)\r\n");

        Dialogue.AssertTranscript(["+ Ready for literal data", IdReply, "a OK ID completed."], dialogue.Transcript);
        var fields = dialogue.Machine.ClientIdentity.Fields;
        Assert.Equal(3, fields.Count);
        Assert.Equal("name", Splits.Text(fields[0].Key));
        Assert.Equal("Thunder bird", Splits.Text(fields[0].Value));
        Assert.Equal("version", Splits.Text(fields[1].Key));
        Assert.Null(fields[1].Value);
        Assert.Equal("os", Splits.Text(fields[2].Key));
        Assert.Equal("Linux", Splits.Text(fields[2].Value));
    }

    [Theory]
    [InlineData("a ID\r\n")]
    [InlineData("a ID (name \"x\")\r\n")]
    [InlineData("a ID (\"name\" x)\r\n")]
    [InlineData("a ID (\"name\")\r\n")]
    [InlineData("a ID (\"name\" (\"x\"))\r\n")]
    [InlineData("a ID \"name\"\r\n")]
    [InlineData("a ID NIL NIL\r\n")]
    [InlineData("a ID (\"\" \"x\")\r\n")]
    public void Id_Invalid_BadAndTheIdentityIsUnchanged(string command)
    {
        var dialogue = Dialogue.RunAllSplits(Plain, "a ID (\"name\" \"first\")\r\n" + command.Replace("a ID", "b ID", StringComparison.Ordinal) + "c NOOP\r\n");

        Dialogue.AssertTranscript([IdReply, "a OK ID completed.", "b BAD [CLIENTBUG] …", "c OK NOOP completed."], dialogue.Transcript);
        Assert.Equal("first", Splits.Text(Assert.Single(dialogue.Machine.ClientIdentity.Fields).Value));
    }

    // ---- STARTTLS ------------------------------------------------------------------------------------------

    [Fact]
    public void StartTls_StopsAndLeavesPipelinedBytesUnread()
    {
        const string Pipelined = "b LOGIN user pass\r\nc LOGOUT\r\n";

        var dialogue = Dialogue.RunAllSplits(Plain, "a STARTTLS\r\n" + Pipelined);

        Dialogue.AssertTranscript(["a OK …", "<StartTls>"], dialogue.Transcript);
        Assert.Equal(PreAuthStep.StartTls, dialogue.StoppedAt);
        Assert.Equal(Splits.Bytes(Pipelined), dialogue.Unconsumed);
        Assert.Equal(PreAuthState.StartTlsPending, dialogue.Machine.State);
    }

    [Fact]
    public void StartTls_MachineRefusesInputUntilTheHandshakeIsDone()
    {
        var machine = Plain();
        var output = new ArrayBufferWriter<byte>();
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>("a STARTTLS\r\nb LOGIN user pass\r\n"u8.ToArray()));
        Assert.Equal(PreAuthStep.StartTls, machine.Advance(ref reader, output));
        var written = output.WrittenCount;

        try
        {
            machine.Advance(ref reader, output);
            Assert.Fail("Advance ran during the TLS handshake.");
        }
        catch (InvalidOperationException)
        {
        }

        Assert.Equal("b LOGIN user pass\r\n"u8.ToArray(), reader.UnreadSequence.ToArray());
        Assert.Equal(written, output.WrittenCount);
        Assert.Null(machine.PendingLogin);
    }

    [Fact]
    public void StartTls_PipelinedBytesAreDiscardedAndTheDialogueResumesUnderTls()
    {
        var dialogue = new Dialogue(Plain());
        dialogue.Feed("a STARTTLS\r\nb LOGIN user pass\r\nc LOG");
        dialogue.CompleteTls();

        dialogue.Feed("d LOGIN user pass\r\n");

        Dialogue.AssertTranscript(["a OK …", "<StartTls>", "<Login d LoginCommand user=\"user\" pass=\"pass\">"], dialogue.Transcript);
    }

    [Fact]
    public void StartTls_Twice_Bad()
    {
        var dialogue = new Dialogue(Plain());
        dialogue.Feed("a STARTTLS\r\n");
        dialogue.CompleteTls();

        dialogue.Feed("b STARTTLS\r\nc NOOP\r\n");

        Dialogue.AssertTranscript(["a OK …", "<StartTls>", "b BAD …", "c OK NOOP completed."], dialogue.Transcript);
    }

    [Fact]
    public void StartTls_OnImplicitTls_Bad() => Expect(Tls, "a STARTTLS\r\nb NOOP\r\n", "a BAD …", "b OK NOOP completed.");

    [Fact]
    public void StartTls_NotOffered_Bad() => Expect(
        () => new PreAuthMachine(Dialogue.Settings(), tlsActive: false, startTlsOffered: false, plaintextAllowedWithoutTls: false),
        "a STARTTLS\r\nb NOOP\r\n",
        "a BAD …",
        "b OK NOOP completed.");

    [Fact]
    public void OnTlsEstablished_WithoutStartTls_Throws()
    {
        Assert.Throws<InvalidOperationException>(() => Plain().OnTlsEstablished());
    }

    // ---- LOGIN ---------------------------------------------------------------------------------------------

    [Fact]
    public void Login_WithoutTls_RefusedAndTheDialogueContinues()
    {
        var dialogue = Dialogue.RunAllSplits(Plain, "a LOGIN user pass\r\nb NOOP\r\n");

        Dialogue.AssertTranscript(["a NO [PRIVACYREQUIRED] …", "b OK NOOP completed."], dialogue.Transcript);
        Assert.Null(dialogue.StoppedAt);
        Assert.Null(dialogue.LastLogin);
    }

    [Fact]
    public void Login_TrustedNetworkWithoutTls_Accepted() =>
        Expect(Trusted, "a LOGIN user pass\r\n", "<Login a LoginCommand user=\"user\" pass=\"pass\">");

    public static TheoryData<string, string> LoginForms => new()
    {
        { "a LOGIN user pass\r\n", "<Login a LoginCommand user=\"user\" pass=\"pass\">" },
        { "x1 login \"us er\" \"p \\\"a\\\\ss\"\r\n", @"<Login x1 LoginCommand user=""us er"" pass=""p \""a\\ss"">" },
        { "a LOGIN {4}\r\nuser {9}\r\np\"a ss\\\u00E9\r\r\n", @"<Login a LoginCommand user=""user"" pass=""p\""a ss\\\xE9\r"">" },
        { "a LOGIN {4+}\r\nuser {6+}\r\np\r\n\"\u00FFs\r\n", @"<Login a LoginCommand user=""user"" pass=""p\r\n\""\xFFs"">" },
        { "a LOGIN \"user\" \"\"\r\n", "<Login a LoginCommand user=\"user\" pass=\"\">" },
        { "a LOGIN us]er \"p\u00E4ss\"\r\n", @"<Login a LoginCommand user=""us]er"" pass=""p\xE4ss"">" },
    };

    [Theory]
    [MemberData(nameof(LoginForms))]
    public void Login_EveryArgumentForm_LoginStepWithTheExactBytes(string input, string login)
    {
        var dialogue = Dialogue.RunAllSplits(Tls, input);

        Assert.Equal(login, dialogue.Transcript.Last(l => l.StartsWith("<Login", StringComparison.Ordinal)));
        Assert.Equal(PreAuthStep.Login, dialogue.StoppedAt);
        Assert.Equal(PreAuthState.LoginPending, dialogue.Machine.State);
        Assert.Empty(dialogue.Unconsumed);
    }

    [Fact]
    public void Login_PasswordWithNul_Refused()
    {
        // A NUL can travel in a literal but never to a backend: no login is attempted.
        Expect(Tls, "a LOGIN user {3+}\r\np\0s\r\nb NOOP\r\n", "a NO [AUTHENTICATIONFAILED] …", "b OK NOOP completed.");
    }

    [Theory]
    [InlineData("a LOGIN user\r\n")]
    [InlineData("a LOGIN\r\n")]
    [InlineData("a LOGIN user pass extra\r\n")]
    [InlineData("a LOGIN NIL pass\r\n")]
    [InlineData("a LOGIN (user) pass\r\n")]
    public void Login_WrongArguments_Bad(string input) =>
        Expect(Tls, input + "b NOOP\r\n", "a BAD [CLIENTBUG] …", "b OK NOOP completed.");

    [Fact]
    public void Login_EmptyUser_FailsWithoutALoginStep() =>
        Expect(Tls, "a LOGIN \"\" pass\r\nb NOOP\r\n", "a NO [AUTHENTICATIONFAILED] …", "b OK NOOP completed.");

    [Fact]
    public void Login_UserOver255Octets_FailsWithoutALoginStep() =>
        Expect(Tls, $"a LOGIN {new string('u', 256)} pass\r\nb NOOP\r\n", "a NO [AUTHENTICATIONFAILED] …", "b OK NOOP completed.");

    [Theory]
    [InlineData(LoginFailure.AuthenticationFailed, "a NO [AUTHENTICATIONFAILED] …")]
    [InlineData(LoginFailure.Unavailable, "a NO [UNAVAILABLE] …")]
    [InlineData(LoginFailure.Limit, "a NO [LIMIT] …")]
    public void OnLoginFailed_TaggedNoAndTheDialogueContinues(LoginFailure failure, string reply)
    {
        var dialogue = Dialogue.RunAllSplits(Tls, "a LOGIN user secret\r\nb NOOP\r\n", d => d.LoginFailures.Enqueue(failure));

        Dialogue.AssertTranscript(["<Login a LoginCommand user=\"user\" pass=\"secret\">", reply, "b OK NOOP completed."], dialogue.Transcript);
        Assert.Equal(PreAuthState.Command, dialogue.Machine.State);
        Assert.Null(dialogue.Machine.PendingLogin);
        Assert.DoesNotContain("secret", string.Join("\n", dialogue.Transcript.Skip(1)), StringComparison.Ordinal);
    }

    [Fact]
    public void OnLoginFailed_ClearsTheCredentials()
    {
        var dialogue = new Dialogue(Tls());
        dialogue.Feed("a LOGIN user secret\r\n");
        var login = dialogue.LastLogin!;

        dialogue.FailLogin(LoginFailure.AuthenticationFailed);

        Assert.All(login.Credentials.Password, b => Assert.Equal(0, b));
        Assert.All(login.Credentials.AuthenticationId, b => Assert.Equal(0, b));
    }

    [Fact]
    public void OnLoginSucceeded_HandsOverTheRequestAndCloses()
    {
        var dialogue = new Dialogue(Tls());
        dialogue.Feed("a LOGIN user secret\r\nb SELECT INBOX\r\n");

        using var request = dialogue.Machine.OnLoginSucceeded();

        Assert.Equal("a", Splits.Text(request.Tag));
        Assert.Equal("secret", Splits.Text(request.Credentials.Password));
        Assert.Equal(PreAuthState.Closed, dialogue.Machine.State);
        Assert.Null(dialogue.Machine.PendingLogin);
        Assert.Equal("b SELECT INBOX\r\n"u8.ToArray(), dialogue.Unconsumed);
    }

    [Fact]
    public void LoginOutcome_WithoutAPendingLogin_Throws()
    {
        var machine = Tls();

        Assert.Throws<InvalidOperationException>(() => machine.OnLoginSucceeded());
        Assert.Throws<InvalidOperationException>(() => machine.OnLoginFailed(new ArrayBufferWriter<byte>(), LoginFailure.Limit));
    }

    [Fact]
    public void Advance_WhileLoginPending_Throws()
    {
        var machine = Tls();
        var output = new ArrayBufferWriter<byte>();
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>("a LOGIN u p\r\nb NOOP\r\n"u8.ToArray()));
        Assert.Equal(PreAuthStep.Login, machine.Advance(ref reader, output));

        try
        {
            machine.Advance(ref reader, output);
            Assert.Fail("Advance ran while a login was pending.");
        }
        catch (InvalidOperationException)
        {
        }

        Assert.Equal("b NOOP\r\n"u8.ToArray(), reader.UnreadSequence.ToArray());
    }

    [Fact]
    public void Pipelined_AnsweredInOrder_UntilALoginStepStopsProcessing()
    {
        var dialogue = Dialogue.RunAllSplits(Tls, "a NOOP\r\nb CAPABILITY\r\nc ID NIL\r\nd LOGIN user pass\r\ne NOOP\r\nf LOGOUT\r\n");

        Dialogue.AssertTranscript(
            ["a OK NOOP completed.", "* CAPABILITY …", "b OK …", IdReply, "c OK …", "<Login d LoginCommand user=\"user\" pass=\"pass\">"],
            dialogue.Transcript);
        Assert.Equal("e NOOP\r\nf LOGOUT\r\n"u8.ToArray(), dialogue.Unconsumed);
    }

    [Fact]
    public void Pipelined_AfterAFailedLogin_TheRestIsAnswered()
    {
        var dialogue = Dialogue.RunAllSplits(
            Tls,
            "a LOGIN user bad\r\nb LOGIN user {4+}\r\ngood\r\nc NOOP\r\n",
            d => d.LoginFailures.Enqueue(LoginFailure.AuthenticationFailed));

        Dialogue.AssertTranscript(
            [
                "<Login a LoginCommand user=\"user\" pass=\"bad\">",
                "a NO [AUTHENTICATIONFAILED] …",
                "<Login b LoginCommand user=\"user\" pass=\"good\">",
            ],
            dialogue.Transcript);
        Assert.Equal("c NOOP\r\n"u8.ToArray(), dialogue.Unconsumed);
    }

    // ---- AUTHENTICATE --------------------------------------------------------------------------------------

    [Fact]
    public void AuthenticatePlain_InitialResponse() => Expect(
        Tls,
        $"a AUTHENTICATE PLAIN {Base64("\0user\0pass")}\r\n",
        "<Login a Plain user=\"user\" pass=\"pass\">");

    [Fact]
    public void AuthenticatePlain_WithoutInitialResponse_EmptyContinuationThenTheLine() => Expect(
        Tls,
        $"a AUTHENTICATE PLAIN\r\n{Base64("\0user\0p ss")}\r\n",
        "+ ",
        "<Login a Plain user=\"user\" pass=\"p ss\">");

    [Fact]
    public void AuthenticatePlain_AuthorizationIdentity_Kept()
    {
        var dialogue = Dialogue.RunAllSplits(Tls, $"a authenticate plain {Base64("admin\0user\0pass")}\r\n");

        Dialogue.AssertTranscript(["<Login a Plain user=\"user\" pass=\"pass\" authz=\"admin\">"], dialogue.Transcript);
        Assert.Equal("admin", Splits.Text(dialogue.LastLogin!.Credentials.EffectiveUser));
    }

    [Fact]
    public void AuthenticatePlain_EightBitAndLongFields()
    {
        var user = new string('u', 255);
        var password = "p\u00E4\u00FF" + new string('p', 252);

        var dialogue = Dialogue.RunAllSplits(Tls, $"a AUTHENTICATE PLAIN\r\n{Base64($"\0{user}\0{password}")}\r\n");

        Assert.Equal($"<Login a Plain user=\"{user}\" pass=\"p\\xE4\\xFF{new string('p', 252)}\">", dialogue.Transcript[^1]);
    }

    [Theory]
    [InlineData("=")]
    [InlineData("AHVzZXI=")]
    [InlineData("dXNlcgBwYXNz")]
    [InlineData("AAB4")]
    public void AuthenticatePlain_MalformedMessage_NoAndTheDialogueContinues(string initialResponse) => Expect(
        Tls,
        $"a AUTHENTICATE PLAIN {initialResponse}\r\nb NOOP\r\n",
        "a NO [AUTHENTICATIONFAILED] …",
        "b OK NOOP completed.");

    [Fact]
    public void AuthenticatePlain_FieldOver255Octets_No() => Expect(
        Tls,
        $"a AUTHENTICATE PLAIN\r\n{Base64($"\0user\0{new string('p', 256)}")}\r\nb NOOP\r\n",
        "+ ",
        "a NO [AUTHENTICATIONFAILED] …",
        "b OK NOOP completed.");

    [Fact]
    public void AuthenticatePlain_PasswordWithNul_No() => Expect(
        Tls,
        $"a AUTHENTICATE PLAIN {Base64("\0user\0pa\0ss")}\r\nb NOOP\r\n",
        "a NO [AUTHENTICATIONFAILED] …",
        "b OK NOOP completed.");

    [Theory]
    [InlineData("AUTHENTICATE PLAIN")]
    [InlineData("AUTHENTICATE LOGIN")]
    public void Authenticate_Cancelled_BadAndTheDialogueContinues(string command) => Expect(
        Tls,
        $"a {command}\r\n*\r\nb NOOP\r\n",
        "+ …",
        "a BAD …",
        "b OK NOOP completed.");

    [Fact]
    public void AuthenticateLogin_CancelledAtThePassword() => Expect(
        Tls,
        "a AUTHENTICATE LOGIN dXNlcg==\r\n*\r\nb NOOP\r\n",
        "+ UGFzc3dvcmQ6",
        "a BAD …",
        "b OK NOOP completed.");

    [Theory]
    [InlineData("a AUTHENTICATE PLAIN\r\n!!!!\r\n")]
    [InlineData("a AUTHENTICATE PLAIN\r\nAHVzZXIAcGFzcw=\r\n")]
    [InlineData("a AUTHENTICATE PLAIN\r\n AHVzZXIAcGFzcw==   \r\n")]
    [InlineData("a AUTHENTICATE PLAIN\r\nAHVzZXIA\tcGFzcw==\r\n")]
    [InlineData("a AUTHENTICATE PLAIN QQ=\r\n")]
    [InlineData("a AUTHENTICATE PLAIN QQ==QQ==\r\n")]
    [InlineData("a AUTHENTICATE LOGIN\r\ndXNlcg==\r\ncGFzcw\r\n")]
    public void Authenticate_InvalidBase64_BadAndTheDialogueContinues(string input)
    {
        var dialogue = Dialogue.RunAllSplits(Tls, input + "b NOOP\r\n");

        Assert.Equal("a BAD [CLIENTBUG] Invalid base64 data.", dialogue.Transcript[^2]);
        Assert.Equal("b OK NOOP completed.", dialogue.Transcript[^1]);
    }

    [Fact]
    public void Authenticate_EmptyResponseLine_FailsAndTheDialogueContinues()
    {
        var dialogue = Dialogue.RunAllSplits(Tls, "a AUTHENTICATE PLAIN\r\n\r\nb NOOP\r\n");

        Assert.Equal("+ ", dialogue.Transcript[0]);
        Assert.Matches("^a (BAD|NO) ", dialogue.Transcript[1]);
        Assert.Equal(["b OK NOOP completed."], dialogue.Transcript.Skip(2));
    }

    [Fact]
    public void AuthenticateLogin_WithoutInitialResponse_UsernameThenPassword() => Expect(
        Tls,
        $"a AUTHENTICATE LOGIN\r\n{Base64("user")}\r\n{Base64("pa ss")}\r\n",
        "+ VXNlcm5hbWU6",
        "+ UGFzc3dvcmQ6",
        "<Login a SaslLogin user=\"user\" pass=\"pa ss\">");

    [Fact]
    public void AuthenticateLogin_WithInitialResponse_PasswordOnly() => Expect(
        Tls,
        $"a AUTHENTICATE login {Base64("user")}\r\n{Base64("pass")}\r\n",
        "+ UGFzc3dvcmQ6",
        "<Login a SaslLogin user=\"user\" pass=\"pass\">");

    [Fact]
    public void AuthenticateLogin_EmptyPassword_Accepted() => Expect(
        Tls,
        $"a AUTHENTICATE LOGIN {Base64("user")}\r\n=\r\n",
        "+ UGFzc3dvcmQ6",
        "<Login a SaslLogin user=\"user\" pass=\"\">");

    [Fact]
    public void AuthenticateLogin_EmptyUser_No() => Expect(
        Tls,
        $"a AUTHENTICATE LOGIN =\r\n{Base64("pass")}\r\nb NOOP\r\n",
        "+ UGFzc3dvcmQ6",
        "a NO [AUTHENTICATIONFAILED] …",
        "b OK NOOP completed.");

    [Theory]
    [InlineData("CRAM-MD5")]
    [InlineData("SCRAM-SHA-256")]
    [InlineData("DIGEST-MD5")]
    [InlineData("PLAINX")]
    public void Authenticate_UnsupportedMechanism_No(string mechanism) => Expect(
        Tls,
        $"a AUTHENTICATE {mechanism}\r\nb NOOP\r\n",
        "a NO …",
        "b OK NOOP completed.");

    [Fact]
    public void Login_WithSynchronisingLiteralWithoutTls_RefusedBeforeThePasswordIsSent() => Expect(
        Plain,
        "a LOGIN {4}\r\nb NOOP\r\n",
        "a NO [PRIVACYREQUIRED] …",
        "b OK NOOP completed.");

    [Theory]
    [InlineData("AUTHENTICATE PLAIN")]
    [InlineData("AUTHENTICATE LOGIN dXNlcg==")]
    public void Authenticate_WithoutTls_Refused(string command) => Expect(
        Plain,
        $"a {command}\r\nb NOOP\r\n",
        "a NO [PRIVACYREQUIRED] …",
        "b OK NOOP completed.");

    [Fact]
    public void Authenticate_TrustedNetworkWithoutTls_Accepted() => Expect(
        Trusted,
        $"a AUTHENTICATE PLAIN {Base64("\0user\0pass")}\r\n",
        "<Login a Plain user=\"user\" pass=\"pass\">");

    [Theory]
    [InlineData("a AUTHENTICATE\r\n")]
    [InlineData("a AUTHENTICATE \"PLAIN\"\r\n")]
    [InlineData("a AUTHENTICATE PLAIN \"AHVzZXIAcGFzcw==\"\r\n")]
    [InlineData("a AUTHENTICATE PLAIN AHVzZXIAcGFzcw== x\r\n")]
    [InlineData("a AUTHENTICATE (PLAIN)\r\n")]
    public void Authenticate_WrongArguments_Bad(string input) =>
        Expect(Tls, input + "b NOOP\r\n", "a BAD [CLIENTBUG] …", "b OK NOOP completed.");

    [Fact]
    public void Authenticate_ResponseLineTooLong_BadAndTheRestIsSkipped()
    {
        var settings = Dialogue.Settings(ParserDriver.SmallLimits);

        Expect(
            () => Tls(settings),
            "a AUTHENTICATE PLAIN\r\n" + new string('A', 100) + "\r\nb NOOP\r\n",
            "+ ",
            "a BAD [TOOBIG] …",
            "b OK NOOP completed.");
    }

    [Fact]
    public void Authenticate_LongInitialResponse_Accepted()
    {
        // Lines carrying SASL-IR tokens may be several KB (DESIGN §3).
        var password = new string('p', 255);
        var ir = Base64($"{new string('z', 255)}\0{new string('u', 255)}\0{password}");

        var dialogue = Dialogue.RunAllSplits(Tls, $"a AUTHENTICATE PLAIN {ir}\r\n");

        Assert.StartsWith("<Login a Plain user=\"uuu", dialogue.Transcript.Single(), StringComparison.Ordinal);
    }

    // ---- Commands that need authentication, errors, limits -------------------------------------------------

    [Fact]
    public void CommandsBeforeLogin_BadAndTheConnectionStaysUsable() => Expect(
        Tls,
        "a ENABLE CONDSTORE\r\nb SELECT INBOX\r\nc noop\r\n",
        "a BAD …",
        "b BAD …",
        "c OK NOOP completed.");

    [Fact]
    public void CommandBeforeLogin_WithSyncLiteral_BadWithoutContinuation() => Expect(
        Tls,
        "a APPEND INBOX {10}\r\nb NOOP\r\n",
        "a BAD …",
        "b OK NOOP completed.");

    [Fact]
    public void CommandBeforeLogin_WithNonSyncLiteral_LiteralIsNotExecuted() => Expect(
        Tls,
        "a APPEND INBOX {19+}\r\nb LOGIN user pass\r\n\r\nc NOOP\r\n",
        "a BAD …",
        "c OK NOOP completed.");

    [Fact]
    public void SyntaxErrors_BadWithTheTagWhenKnown() => Expect(
        Tls,
        "* NOOP\r\na LOGIN \"x\r\nb NOOP\r\n",
        "* BAD [CLIENTBUG] …",
        "a BAD [CLIENTBUG] …",
        "b OK NOOP completed.");

    [Fact]
    public void LineTooLong_BadTooBigAndTheNextCommandRuns() => Expect(
        () => Tls(Dialogue.Settings(ParserDriver.SmallLimits)),
        $"a LOGIN user {new string('p', 80)}\r\nb NOOP\r\n",
        "a BAD [TOOBIG] …",
        "b OK NOOP completed.");

    [Fact]
    public void LiteralTooLarge_Sync_BadWithoutContinuation() => Expect(
        () => Tls(Dialogue.Settings(ParserDriver.SmallLimits)),
        "a LOGIN user {17}\r\nb NOOP\r\n",
        "a BAD [TOOBIG] …",
        "b OK NOOP completed.");

    [Fact]
    public void LiteralTooLarge_NonSync_ByeAndClose()
    {
        var dialogue = Dialogue.RunAllSplits(() => Tls(Dialogue.Settings(ParserDriver.SmallLimits)), "a LOGIN user {17+}\r\n0123456789abcdef\r\n");

        Dialogue.AssertTranscript(["* BYE [TOOBIG] …", "<Close ProtocolViolation>"], dialogue.Transcript);
        Assert.Equal(PreAuthCloseReason.ProtocolViolation, dialogue.Machine.CloseReason);
    }

    [Fact]
    public void ErrorBudget_ExceededByTheNextBad_ByeAndClose()
    {
        var dialogue = Dialogue.RunAllSplits(
            Tls,
            "a LOGIN x\r\n* x\r\nb LOGIN\r\nc NOOP\r\nd ID foo\r\ne NOOP\r\n");

        Dialogue.AssertTranscript(
            ["a BAD …", "* BAD …", "b BAD …", "c OK NOOP completed.", "d BAD …", "* BYE …", "<Close TooManyErrors>"],
            dialogue.Transcript);
        Assert.Equal(PreAuthCloseReason.TooManyErrors, dialogue.Machine.CloseReason);
        Assert.Equal("e NOOP\r\n"u8.ToArray(), dialogue.Unconsumed);
    }

    [Fact]
    public void ErrorBudget_Zero_FirstBadCloses() => Expect(
        () => Tls(Dialogue.Settings(errorBudget: 0)),
        "a LOGIN\r\nb NOOP\r\n",
        "a BAD …",
        "* BYE …",
        "<Close TooManyErrors>");

    [Fact]
    public void ErrorBudget_CommandsNeedingAuthenticationDoNotCount() => Expect(
        () => Tls(Dialogue.Settings(errorBudget: 0)),
        "a SELECT INBOX\r\nb ENABLE CONDSTORE\r\nc FOO\r\nd NOOP\r\n",
        "a BAD …",
        "b BAD …",
        "c BAD …",
        "d OK NOOP completed.");

    [Fact]
    public void ErrorBudget_RefusalsAreNotErrors() => Expect(
        () => Plain(Dialogue.Settings(errorBudget: 0)),
        "a LOGIN u p\r\nb AUTHENTICATE CRAM-MD5\r\nc NOOP\r\n",
        "a NO [PRIVACYREQUIRED] …",
        "b NO …",
        "c OK NOOP completed.");

    [Fact]
    public void ResponsesAreWellFormed()
    {
        // Every response the dialogue writes parses as an IMAP response line.
        var dialogue = Dialogue.RunAllSplits(
            Plain,
            "a CAPABILITY\r\nb ID NIL\r\nc LOGIN u p\r\nd SELECT x\r\n* x\r\ne AUTHENTICATE CRAM-MD5\r\nf LOGOUT\r\n",
            d => d.Greet());

        foreach (var line in dialogue.Transcript.Where(l => !l.StartsWith('<')))
        {
            Assert.True(ResponseLine.TryParse(Splits.Bytes(line), out _), line);
        }
    }
}
