using System.Buffers;
using System.Text;
using ImapProxy.Protocol.Parsing;
using ImapProxy.Protocol.PreAuth;
using ImapProxy.Protocol.Tests.TestSupport;

namespace ImapProxy.Protocol.Tests.PreAuth;

/// <summary>
/// Drives a <see cref="PreAuthMachine"/> the way a session does: each read appends to a pipe, the machine advances
/// over what is buffered, the reader's position is honoured, and a step other than NeedMoreInput is handled before
/// the machine sees the buffer again. The transcript holds the machine's output lines and, as "&lt;...&gt;" lines,
/// the steps it returned.
/// </summary>
internal sealed class Dialogue
{
    private readonly SimulatedPipe _pipe = new();
    private readonly ArrayBufferWriter<byte> _output = new();
    private readonly Queue<IReadOnlyList<byte[]>> _pendingReads = new();
    private readonly StringBuilder _transcript = new();
    private int _outputShown;

    public Dialogue(PreAuthMachine machine)
    {
        Machine = machine;
    }

    public PreAuthMachine Machine { get; }

    /// <summary>How the session answers Login steps, in order; when empty the dialogue stops at a Login step.</summary>
    public Queue<LoginFailure> LoginFailures { get; } = new();

    /// <summary>The step the dialogue stopped at (Login, StartTls or Close), or null while it runs.</summary>
    public PreAuthStep? StoppedAt { get; private set; }

    /// <summary>The login request seen at the last Login step (its bytes are cleared once the login fails).</summary>
    public LoginRequest? LastLogin { get; private set; }

    public IReadOnlyList<string> Transcript
    {
        get
        {
            ShowOutput();
            var text = _transcript.ToString();
            Assert.True(text.Length == 0 || text.EndsWith("\r\n", StringComparison.Ordinal), $"Output does not end with CRLF: {text}");
            return text.Length == 0 ? [] : text[..^2].Split("\r\n");
        }
    }

    /// <summary>Input the machine has not taken: what the pipe holds plus reads not delivered yet.</summary>
    public byte[] Unconsumed => [.. _pipe.Unconsumed(), .. _pendingReads.SelectMany(r => r.SelectMany(s => s))];

    public void Greet() => Machine.WriteGreeting(_output);

    public void Feed(Delivery delivery)
    {
        foreach (var read in delivery.Reads)
        {
            _pendingReads.Enqueue(read);
        }

        Pump();
    }

    public void Feed(string input) => Feed(Splits.Whole(Splits.Bytes(input)));

    /// <summary>The handshake after STARTTLS: what was buffered is discarded, never executed.</summary>
    public void CompleteTls()
    {
        Assert.Equal(PreAuthStep.StartTls, StoppedAt);
        _pipe.Clear();
        _pendingReads.Clear();
        Machine.OnTlsEstablished();
        StoppedAt = null;
    }

    /// <summary>The session's login failed: the machine answers and the dialogue goes on with buffered input.</summary>
    public void FailLogin(LoginFailure failure)
    {
        Assert.Equal(PreAuthStep.Login, StoppedAt);
        Machine.OnLoginFailed(_output, failure);
        StoppedAt = null;
        Pump();
    }

    private void Pump()
    {
        if (StoppedAt is not null)
        {
            return;
        }

        // The buffer is advanced over once more before reading: after a handled step, input may be waiting.
        while (true)
        {
            if (!Advance())
            {
                return;
            }

            if (!_pendingReads.TryDequeue(out var read))
            {
                return;
            }

            foreach (var segment in read)
            {
                _pipe.Write(segment);
            }
        }
    }

    /// <summary>Advances until the machine needs more input (true) or the dialogue stops (false).</summary>
    private bool Advance()
    {
        for (var guard = 0; guard < 10_000; guard++)
        {
            var step = AdvanceOnce(out _);
            if (step == PreAuthStep.NeedMoreInput)
            {
                // NeedMoreInput must mean "nothing more can be done with these bytes": a session waits for new
                // bytes (AdvanceTo(consumed, examined: end)), so anything left must be an incomplete line.
                var outputBefore = _output.WrittenCount;
                var again = AdvanceOnce(out var consumed);
                Assert.True(
                    again == PreAuthStep.NeedMoreInput && consumed == 0 && _output.WrittenCount == outputBefore,
                    $"NeedMoreInput returned with work left in the buffer (\"{Splits.Escape(_pipe.Unconsumed())}\").");
                return true;
            }

            ShowOutput();
            _transcript.Append('<').Append(Describe(step)).Append(">\r\n");
            if (step == PreAuthStep.Login && LoginFailures.TryDequeue(out var failure))
            {
                Machine.OnLoginFailed(_output, failure);
                continue;
            }

            StoppedAt = step;
            return false;
        }

        Assert.Fail("The machine keeps returning steps.");
        return false;
    }

    private PreAuthStep AdvanceOnce(out long consumed)
    {
        var reader = new SequenceReader<byte>(_pipe.Read());
        var step = Machine.Advance(ref reader, _output);
        consumed = reader.Consumed;
        _pipe.AdvanceTo(reader.Consumed);
        return step;
    }

    private string Describe(PreAuthStep step)
    {
        switch (step)
        {
            case PreAuthStep.Login:
                Assert.Equal(PreAuthState.LoginPending, Machine.State);
                var login = Machine.PendingLogin;
                Assert.NotNull(login);
                LastLogin = login;
                return Render(login);
            case PreAuthStep.StartTls:
                Assert.Equal(PreAuthState.StartTlsPending, Machine.State);
                return "StartTls";
            case PreAuthStep.Close:
                Assert.Equal(PreAuthState.Closed, Machine.State);
                return $"Close {Machine.CloseReason}";
            default:
                return step.ToString();
        }
    }

    public static string Render(LoginRequest login)
    {
        var c = login.Credentials;
        var builder = new StringBuilder($"Login {Splits.Escape(login.Tag)} {c.Mechanism} user=\"{Splits.Escape(c.AuthenticationId)}\" pass=\"{Splits.Escape(c.Password)}\"");
        if (c.AuthorizationId.Length > 0)
        {
            builder.Append($" authz=\"{Splits.Escape(c.AuthorizationId)}\"");
        }

        return builder.ToString();
    }

    private void ShowOutput()
    {
        var written = _output.WrittenSpan;
        _transcript.Append(Splits.Text(written[_outputShown..]));
        _outputShown = written.Length;
    }

    /// <summary>Standard settings: error budget 3, no extras, no IMAP4rev2.</summary>
    public static PreAuthSettings Settings(ImapParserLimits? limits = null, int errorBudget = 3, bool imap4Rev2 = false, params string[] extras) =>
        new(limits ?? new ImapParserLimits(), "ImapProxy ready.", errorBudget, extras, imap4Rev2, "ImapProxy", "1.0");

    /// <summary>A fresh dialogue per delivery of <paramref name="input"/>: all must produce the same transcript.</summary>
    public static Dialogue RunAllSplits(Func<PreAuthMachine> newMachine, string input, Action<Dialogue>? prepare = null)
    {
        var bytes = Splits.Bytes(input);
        Dialogue? whole = null;
        foreach (var delivery in Splits.All(bytes))
        {
            var dialogue = new Dialogue(newMachine());
            prepare?.Invoke(dialogue);
            dialogue.Feed(delivery);
            if (whole is null)
            {
                whole = dialogue;
                continue;
            }

            Assert.True(
                whole.Transcript.SequenceEqual(dialogue.Transcript),
                $"{delivery}: expected\n{string.Join("\n", whole.Transcript)}\nbut got\n{string.Join("\n", dialogue.Transcript)}");
            Assert.True(whole.Unconsumed.AsSpan().SequenceEqual(dialogue.Unconsumed), $"{delivery}: unconsumed input differs.");
            Assert.Equal(whole.Machine.State, dialogue.Machine.State);
            Assert.Equal(whole.StoppedAt, dialogue.StoppedAt);
        }

        return whole!;
    }

    /// <summary>Lines match exactly, or by prefix where the expected line ends with "…" (free text).</summary>
    public static void AssertTranscript(IReadOnlyList<string> expected, IReadOnlyList<string> actual)
    {
        var message = $"expected\n{string.Join("\n", expected)}\nbut got\n{string.Join("\n", actual)}";
        Assert.True(expected.Count == actual.Count, message);
        for (var i = 0; i < expected.Count; i++)
        {
            var matches = expected[i].EndsWith('…')
                ? actual[i].StartsWith(expected[i][..^1], StringComparison.Ordinal)
                : actual[i] == expected[i];
            Assert.True(matches, $"line {i}: {message}");
        }
    }
}
