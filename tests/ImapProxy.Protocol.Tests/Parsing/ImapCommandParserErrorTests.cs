using System.Buffers;
using System.Text;
using ImapProxy.Protocol.Parsing;
using ImapProxy.Protocol.Tests.TestSupport;

namespace ImapProxy.Protocol.Tests.Parsing;

/// <summary>
/// Rejected commands (with <see cref="ParserDriver.SmallLimits"/>: lines of 64, literals of 16, commands of 256).
/// Each case is followed by "z NOOP", which must parse: a rejected command is consumed to its very end, and
/// nothing inside it (a literal's bytes, the rest of a long line) is ever taken for a command.
/// </summary>
public sealed class ImapCommandParserErrorTests
{
    private const string Next = "z NOOP\r\n";
    private const string NextParsed = "CMD z Noop";

    private static readonly ImapParserLimits s_limits = ParserDriver.SmallLimits;
    private static readonly string s_long = new('x', 70);

    public static TheoryData<string, string[]> Rejected => new()
    {
        // Tags and command names.
        { "* NOOP\r\n", ["ERR Syntax tag=<none>"] },
        { " a NOOP\r\n", ["ERR Syntax tag=<none>"] },
        { "+ NOOP\r\n", ["ERR Syntax tag=<none>"] },
        { "(a) NOOP\r\n", ["ERR Syntax tag=<none>"] },
        { "\"a\" NOOP\r\n", ["ERR Syntax tag=<none>"] },
        { "a\r\n", ["ERR Syntax tag=a"] },
        { "a \r\n", ["ERR Syntax tag=a"] },
        { "a  NOOP\r\n", ["ERR Syntax tag=a"] },
        { "a \"NOOP\"\r\n", ["ERR Syntax tag=a"] },
        { "a\tNOOP\r\n", ["ERR Syntax tag=a"] },

        // Commands not available before authentication: the tag is kept.
        { "a SELECT INBOX\r\n", ["ERR NotAvailable tag=a"] },
        { "b ENABLE CONDSTORE\r\n", ["ERR NotAvailable tag=b"] },
        { "c NOOPS\r\n", ["ERR NotAvailable tag=c"] },
        { "d LOGINX u p\r\n", ["ERR NotAvailable tag=d"] },

        // ... with a synchronising literal: rejected at once, no continuation, the literal never comes.
        { "a SELECT {5}\r\n", ["ERR NotAvailable tag=a"] },

        // ... with non-synchronising literals: their bytes are skipped, never parsed as commands.
        { "a SELECT {10+}\r\nb LOGOUT\r\n\r\n", ["ERR NotAvailable tag=a"] },
        { "a APPEND INBOX {3+}\r\nabc {10+}\r\nb LOGOUT\r\n\r\n", ["ERR NotAvailable tag=a"] },
        { "a X {5+}\r\n{99+}\r\n", ["ERR NotAvailable tag=a"] },
        { "a X {10+}\r\nb NOOP {5}\r\n", ["ERR NotAvailable tag=a"] },

        // Lines over the limit: the rest of the line is discarded; a literal it announces is handled.
        { $"a NOOP {s_long}\r\n", ["ERR LineTooLong tag=a"] },
        { $"a NOOP {s_long}\n", ["ERR LineTooLong tag=a"] },
        { $"{s_long}\r\n", ["ERR LineTooLong tag=<none>"] },
        { "a LOGIN u " + new string('p', 55) + "\r\n", ["ERR LineTooLong tag=a"] },
        { "a LOGIN u " + new string('p', 55) + "\n", ["ERR LineTooLong tag=a"] },
        { $"a LOGIN {s_long} {{10+}}\r\nb LOGOUT\r\n\r\n", ["ERR LineTooLong tag=a"] },
        { $"a LOGIN {s_long} {{5+}}\r\nhello\r\n", ["ERR LineTooLong tag=a"] },
        { $"a LOGIN {s_long} {{5}}\r\n", ["ERR LineTooLong tag=a"] },
        { $"a LOGIN {s_long} {{17+}}\r\n", ["ERR LiteralTooLarge tag=a fatal"] },
        { $"a LOGIN {{1+}}\r\nu {s_long} {{5+}}\r\nhello\r\n", ["ERR LineTooLong tag=a"] },
        { $"a SELECT {s_long}\r\n", ["ERR LineTooLong tag=a"] },

        // Literals over the limit.
        { "a LOGIN {17}\r\n", ["ERR LiteralTooLarge tag=a"] },
        { "a LOGIN u {99999999999999999999999}\r\n", ["ERR LiteralTooLarge tag=a"] },

        // Malformed literal markers.
        { "a LOGIN {abc}\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN {}\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN {+}\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN {-1}\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN {5}x\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN u{5}\r\n", ["ERR Syntax tag=a"] },

        // Unbalanced parentheses.
        { "a ID (\"a\" \"b\"\r\n", ["ERR Syntax tag=a"] },
        { "a ID \"a\")\r\n", ["ERR Syntax tag=a"] },
        { "a ID ((\"a\" \"b\")\r\n", ["ERR Syntax tag=a"] },
        { "a ID )\r\n", ["ERR Syntax tag=a"] },
        { "a ID (a ))\r\n", ["ERR Syntax tag=a"] },
        { "a ID ( a)\r\n", ["ERR Syntax tag=a"] },
        { "a ID (\"a\" {1+}\r\nb\r\n", ["ERR Syntax tag=a"] },
        { "a ID (((((x)))))\r\n", ["ERR Syntax tag=a"] },

        // Bad quoted strings: unterminated, bad escapes, NUL, CR or LF inside.
        { "a LOGIN \"abc\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN u \"abc\\\"\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN \"a\\bc\" p\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN \"a\\\" p\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN \"a\0b\" p\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN \"a\rb\" p\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN \"a\n", ["ERR Syntax tag=a"] },
        { "a LOGIN \"a\nb\" p\r\n", ["ERR Syntax tag=a", "ERR Syntax tag=b"] },

        // Arguments not separated by exactly one space; stray bytes.
        { "a LOGIN \"u\"\"p\"\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN u  p\r\n", ["ERR Syntax tag=a"] },
        { "a NOOP \r\n", ["ERR Syntax tag=a"] },
        { "a NOOP\r\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN u%p x\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN u* x\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN u\0 p\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN u\u007F p\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN u\x01 p\r\n", ["ERR Syntax tag=a"] },
        { "a LOGIN {1+}\r\nxy\r\n", ["ERR Syntax tag=a"] },
    };

    [Theory]
    [MemberData(nameof(Rejected))]
    public void TryParse_RejectedCommand_SameResultForEverySplit_AndTheNextCommandParses(string input, string[] expected)
    {
        var fatal = expected[^1].EndsWith(" fatal", StringComparison.Ordinal);

        var run = ParserDriver.RunAllSplits(s_limits, fatal ? input : input + Next);

        Assert.Equal(fatal ? expected : [.. expected, NextParsed], run.Events);
        Assert.Empty(run.Unconsumed);
        Assert.True(run.AtCommandStart);
    }

    [Fact]
    public void TryParse_UnknownCommandWithNonSyncLiteral_LiteralIsNotExecuted()
    {
        // The 12 octets "b LOGOUT\r\n\r\n" are the literal; the command then still needs its final line.
        var run = ParserDriver.RunAllSplits(s_limits, "a SELECT {12+}\r\nb LOGOUT\r\n\r\n");

        Assert.Empty(run.Events);
        Assert.Empty(run.Unconsumed);
        Assert.False(run.AtCommandStart);

        run = ParserDriver.RunAllSplits(s_limits, "a SELECT {12+}\r\nb LOGOUT\r\n\r\n\r\nc NOOP\r\n");

        Assert.Equal(["ERR NotAvailable tag=a", "CMD c Noop"], run.Events);
    }

    [Fact]
    public void TryParse_SyncLiteralOverLimit_NoContinuation()
    {
        var run = ParserDriver.RunAllSplits(s_limits, "a LOGIN u {17}\r\nb NOOP\r\n");

        Assert.Equal(["ERR LiteralTooLarge tag=a", "CMD b Noop"], run.Events);
        Assert.DoesNotContain("+", run.Events);
    }

    [Fact]
    public void TryParse_NonSyncLiteralOverLimit_IsFatal()
    {
        var parser = new ImapCommandParser(s_limits);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>("a LOGIN u {17+}\r\n0123456789abcdefg\r\n"u8.ToArray()));

        Assert.Equal(ParseStatus.Error, parser.TryParse(ref reader, out var command, out var error));

        Assert.Null(command);
        Assert.True(error.Fatal);
        Assert.Equal(ParseErrorKind.LiteralTooLarge, error.Kind);
        Assert.Equal("a"u8.ToArray(), error.Tag);
        Assert.Equal("TOOBIG", error.ResponseCode);
    }

    [Fact]
    public void TryParse_UnknownCommandWithNonSyncLiteralOverLimit_IsFatal()
    {
        var run = ParserDriver.RunAllSplits(s_limits, "a APPEND INBOX {17+}\r\n");

        Assert.Equal(["ERR LiteralTooLarge tag=a fatal"], run.Events);
    }

    [Fact]
    public void TryParse_CommandOverSizeLimit_RejectedAtItsEnd()
    {
        // Lines under the line limit, joined by small non-synchronising literals, adding up past 256 octets.
        var builder = new StringBuilder("a ID (");
        for (var i = 0; i < 8; i++)
        {
            builder.Append(new string('k', 40)).Append(" {1+}\r\nv ");
        }

        builder.Append("x)\r\n");

        var run = ParserDriver.RunAllSplits(s_limits, builder + Next);

        Assert.Equal(["ERR CommandTooLarge tag=a", NextParsed], run.Events);
    }

    [Fact]
    public void TryParse_LiteralPastCommandSizeLimit_Rejected()
    {
        var builder = new StringBuilder("a ID (");
        for (var i = 0; i < 16; i++)
        {
            builder.Append("{16+}\r\n").Append(new string('v', 16)).Append(' ');
        }

        builder.Append("x)\r\n");

        var run = ParserDriver.RunAllSplits(s_limits, builder + Next);

        Assert.Equal(["ERR LiteralTooLarge tag=a", NextParsed], run.Events);
    }

    [Fact]
    public void TryParse_TooManyArguments_Rejected()
    {
        var limits = new ImapParserLimits();
        var items = string.Join(' ', Enumerable.Repeat("x", ImapParserLimits.MaxArguments - 1));
        Assert.StartsWith("CMD a Id (x x", Assert.Single(ParserDriver.Run(limits, $"a ID ({items})\r\n").Events), StringComparison.Ordinal);

        var run = ParserDriver.Run(limits, $"a ID ({items} x)\r\n{Next}");

        Assert.Equal(["ERR CommandTooLarge tag=a", NextParsed], run.Events);
    }

    [Fact]
    public void TryParse_TooManyArgumentsWithLiteral_Rejected()
    {
        var limits = new ImapParserLimits();
        var items = string.Join(' ', Enumerable.Repeat("x", ImapParserLimits.MaxArguments));

        var run = ParserDriver.RunAllSplits(limits, $"a ID {items} {{1+}}\r\ny\r\n{Next}");

        Assert.Equal(["ERR CommandTooLarge tag=a", NextParsed], run.Events);
    }

    [Fact]
    public void TryParse_TagOf64BytesOrMore_RejectedUntagged()
    {
        // A tag the parser will not keep must not produce a command with an empty tag (the reply would be " OK").
        var run = ParserDriver.RunAllSplits(new ImapParserLimits(), new string('t', 64) + " NOOP\r\n" + Next);

        Assert.Equal(["ERR Syntax tag=<none>", NextParsed], run.Events);
    }

    [Fact]
    public void TryParse_ErrorsCarryResponseCodes()
    {
        Assert.Equal("CLIENTBUG", new ParseError(ParseErrorKind.Syntax, null, "x", false).ResponseCode);
        Assert.Equal("TOOBIG", new ParseError(ParseErrorKind.LineTooLong, null, "x", false).ResponseCode);
        Assert.Equal("TOOBIG", new ParseError(ParseErrorKind.LiteralTooLarge, null, "x", false).ResponseCode);
        Assert.Equal("TOOBIG", new ParseError(ParseErrorKind.CommandTooLarge, null, "x", false).ResponseCode);
        Assert.Null(new ParseError(ParseErrorKind.NotAvailable, null, "x", false).ResponseCode);
    }

    [Fact]
    public void TryParse_EndlessLine_IsConsumedWithinTheLimit()
    {
        // 10 MB without a line end, in 4 KB reads: the parser must keep taking the bytes (skipping them), never
        // ask for more while the buffer grows.
        var limits = new ImapParserLimits();
        const int ReadSize = 4096;
        var parser = new ImapCommandParser(limits);
        var pipe = new SimulatedPipe();
        var filler = new byte[ReadSize];
        filler.AsSpan().Fill((byte)'x');
        var events = new List<string>();

        Feed("a LOGIN "u8);
        for (var i = 0; i < 10 * 1024 * 1024 / ReadSize; i++)
        {
            Feed(filler);
            Assert.True(pipe.Length <= limits.MaxLineLength + 2 + ReadSize, $"{pipe.Length} bytes buffered after {i + 1} reads");
        }

        Assert.Empty(events);
        Feed("\r\nb NOOP\r\n"u8);

        Assert.Equal(["ERR LineTooLong tag=a", "CMD b Noop"], events);
        Assert.Equal(0, pipe.Length);

        void Feed(ReadOnlySpan<byte> bytes)
        {
            pipe.Write(bytes);
            var reader = new SequenceReader<byte>(pipe.Read());
            while (ParserDriver.ParseCommand(parser, ref reader) is { } outcome)
            {
                events.Add(outcome);
            }

            pipe.AdvanceTo(reader.Consumed);
        }
    }

    [Fact]
    public void TryParse_SkippedLiteral_DoesNotPileUpInThePipe()
    {
        var limits = new ImapParserLimits();
        var input = Splits.Bytes("a APPEND INBOX {4000+}\r\n" + new string('m', 4000) + "\r\n" + Next);

        var run = ParserDriver.Run(limits, Splits.InChunksOf(input, 100));

        Assert.Equal(["ERR NotAvailable tag=a", NextParsed], run.Events);
        Assert.True(run.HighWaterMark <= 200, $"high-water mark {run.HighWaterMark}");
    }

    [Fact]
    public void TryReadLine_ReturnsOneRawLine()
    {
        var run = ParserDriver.RunAllSplits(s_limits, "AHVzZXIAcGFzcw==\r\n*\n\r\nb NOOP\r\n", () => LinesThenCommands(3));

        Assert.Equal(["LINE AHVzZXIAcGFzcw==", "LINE *", "LINE ", "CMD b Noop"], run.Events);
        Assert.Empty(run.Unconsumed);
    }

    [Fact]
    public void TryReadLine_LineTooLong_ErrorThenTheRestIsSkipped()
    {
        var run = ParserDriver.RunAllSplits(s_limits, new string('A', 100) + "\r\nQQ==\r\nb NOOP\r\n", () => LinesThenCommands(2));

        Assert.Equal(["LINE ERROR", "LINE QQ==", "CMD b Noop"], run.Events);
    }

    [Fact]
    public void TryReadLine_LineTooLong_CommandsResumeAfterIt()
    {
        // The dialogue answers BAD and goes back to commands; the long line's rest must not be parsed.
        var run = ParserDriver.RunAllSplits(s_limits, new string('A', 100) + " {5+}\r\nb NOOP\r\n", () => LinesThenCommands(1));

        Assert.Equal(["LINE ERROR", "CMD b Noop"], run.Events);
    }

    [Fact]
    public void TryReadLine_LongestLineAccepted()
    {
        var line = new string('A', s_limits.MaxLineLength);

        var run = ParserDriver.RunAllSplits(s_limits, line + "\r\n", () => LinesThenCommands(1));

        Assert.Equal(["LINE " + line], run.Events);
    }

    /// <summary>Reads <paramref name="lines"/> raw lines with TryReadLine, then parses commands.</summary>
    private static ParserStep LinesThenCommands(int lines) =>
        (ImapCommandParser parser, ref SequenceReader<byte> reader) =>
        {
            if (lines == 0)
            {
                return ParserDriver.ParseCommand(parser, ref reader);
            }

            switch (parser.TryReadLine(ref reader, out var line))
            {
                case ParseStatus.NeedMoreData:
                    return null;
                case ParseStatus.Error:
                    lines--;
                    return "LINE ERROR";
                default:
                    lines--;
                    return "LINE " + Splits.Escape(line.ToArray());
            }
        };
}
