using System.Buffers;
using ImapProxy.Protocol.Parsing;
using ImapProxy.Protocol.Tests.TestSupport;

namespace ImapProxy.Protocol.Tests.Parsing;

/// <summary>
/// Well-formed commands. Every case runs with the input whole, split into two reads at every byte, split into two
/// segments at every byte, one byte per read and one byte per segment; all must give the same result.
/// </summary>
public sealed class ImapCommandParserTests
{
    private static readonly ImapParserLimits s_defaults = new();

    public static TheoryData<string, string[]> WellFormed => new()
    {
        { "a CAPABILITY\r\n", ["CMD a Capability"] },
        { "a NOOP\r\nb LOGOUT\r\n", ["CMD a Noop", "CMD b Logout"] },
        {
            "1 capability\r\n2 NoOp\r\n3 logout\r\n4 iD nil\r\n5 starttls\r\n6 LoGiN u p\r\n7 authenticate plain\r\n",
            ["CMD 1 Capability", "CMD 2 Noop", "CMD 3 Logout", "CMD 4 Id NIL", "CMD 5 StartTls", "CMD 6 Login u p", "CMD 7 Authenticate plain"]
        },

        // Atoms, including resp-specials (']') and 8-bit bytes; tags may hold ']' too.
        { "a LOGIN user pass\r\n", ["CMD a Login user pass"] },
        { "a]1 LOGIN us]er p]a\u00E9\r\n", [@"CMD a]1 Login us]er p]a\xE9"] },
        { "a LOGIN NILS nil\r\n", ["CMD a Login NILS NIL"] },

        // Quoted strings: spaces, escaped quote and backslash, 8-bit, empty.
        { "a LOGIN \"us er\" \"p\\\"a\\\\ss\"\r\n", [@"CMD a Login ""us er"" ""p\""a\\ss"""] },
        { "a LOGIN \"\" \"p\u00E4ss\u00FF\"\r\n", [@"CMD a Login """" ""p\xE4ss\xFF"""] },
        { "a LOGIN \"NIL\" \"{3}\"\r\n", [@"CMD a Login ""NIL"" ""{3}"""] },

        // Synchronising literals: a continuation request each, then the value.
        { "a LOGIN {4}\r\nuser {4}\r\npass\r\n", ["+", "+", @"CMD a Login ""user"" ""pass"""] },

        // Non-synchronising literals (LITERAL+): no continuation.
        { "a LOGIN {4+}\r\nuser {4+}\r\npass\r\n", [@"CMD a Login ""user"" ""pass"""] },
        { "a LOGIN user {4+}\r\np ss\r\nb NOOP\r\n", [@"CMD a Login user ""p ss""", "CMD b Noop"] },

        // Empty literals, synchronising and not.
        { "a LOGIN {0}\r\n {0+}\r\n\r\n", ["+", @"CMD a Login """" """""] },

        // CR, LF, quotes, braces and NUL inside a literal are data.
        { "a LOGIN {4}\r\na\r\nb {2+}\r\n\r\n\r\n", ["+", @"CMD a Login ""a\r\nb"" ""\r\n"""] },
        { "a LOGIN {5+}\r\n{3}\r\n x\r\n", [@"CMD a Login ""{3}\r\n"" x"] },
        { "a LOGIN {3+}\r\n\"\0\\ x\r\n", [@"CMD a Login ""\""\x00\\"" x"] },

        // Lists (ID), nested lists, empty lists, NIL members.
        { "a ID (\"name\" \"Mail\" \"version\" NIL)\r\n", [@"CMD a Id (""name"" ""Mail"" ""version"" NIL)"] },
        { "a ID (a (b (c NIL)) ())\r\n", ["CMD a Id (a (b (c NIL)) ())"] },
        { "a ID ((((x))))\r\n", ["CMD a Id ((((x))))"] },
        { "a ID ()\r\n", ["CMD a Id ()"] },

        // Literals inside a list, and a list after a literal.
        { "a ID (\"name\" {3}\r\nfoo \"x\" {2+}\r\nab)\r\n", ["+", @"CMD a Id (""name"" ""foo"" ""x"" ""ab"")"] },
        { "a ID ({1+}\r\nk {1+}\r\nv)\r\n", [@"CMD a Id (""k"" ""v"")"] },
        { "a ID {1+}\r\nx (\"k\" \"v\")\r\n", [@"CMD a Id ""x"" (""k"" ""v"")"] },

        // Bare LF ends a line; empty lines between commands are ignored.
        { "a NOOP\nb LOGIN u p\n", ["CMD a Noop", "CMD b Login u p"] },
        { "\r\n\n\r\na NOOP\r\n\r\n\nb NOOP\r\n", ["CMD a Noop", "CMD b Noop"] },

        // SASL-IR is an atom (base64 characters are atom characters).
        { "a AUTHENTICATE PLAIN AHVzZXIAcGFzcw==\r\n", ["CMD a Authenticate PLAIN AHVzZXIAcGFzcw=="] },
        { "a AUTHENTICATE LOGIN =\r\n", ["CMD a Authenticate LOGIN ="] },

        // Commands that take no arguments still parse with them (the dialogue rejects them).
        { "a NOOP x \"y\"\r\n", [@"CMD a Noop x ""y"""] },
    };

    [Theory]
    [MemberData(nameof(WellFormed))]
    public void TryParse_WellFormedCommand_SameResultForEverySplit(string input, string[] expected)
    {
        var run = ParserDriver.RunAllSplits(s_defaults, input);

        Assert.Equal(expected, run.Events);
        Assert.Empty(run.Unconsumed);
        Assert.True(run.AtCommandStart);
    }

    [Fact]
    public void TryParse_ValuesAreTheExactBytes()
    {
        var parser = new ImapCommandParser(s_defaults);
        var input = "t1 LOGIN \"a\\\\b\\\"c\" {4+}\r\n\r\n\u00E9\r\nb N"u8.ToArray();
        var reader = new SequenceReader<byte>(Sequences.Create(input, 5, 12, 20, 27));

        var status = parser.TryParse(ref reader, out var command, out _);

        Assert.Equal(ParseStatus.Command, status);
        Assert.NotNull(command);
        Assert.Equal("t1"u8.ToArray(), command.Tag);
        Assert.Equal(ImapCommandName.Login, command.Name);
        Assert.Equal(2, command.Arguments.Count);
        Assert.Equal(ImapArgumentKind.Text, command.Arguments[0].Kind);
        Assert.Equal("a\\b\"c"u8.ToArray(), command.Arguments[0].Value);
        Assert.Equal(ImapArgumentKind.Text, command.Arguments[1].Kind);
        Assert.Equal(new byte[] { 0x0D, 0x0A, 0xC3, 0xA9 }, command.Arguments[1].Value);
        Assert.True(command.Arguments[0].IsAstring);
        Assert.Equal("b N"u8.ToArray(), reader.UnreadSequence.ToArray());
    }

    [Fact]
    public void TryParse_LongestLineAccepted()
    {
        var limits = ParserDriver.SmallLimits;
        var line = "a LOGIN u " + new string('p', limits.MaxLineLength - 10);
        Assert.Equal(limits.MaxLineLength, line.Length);

        Assert.Equal(["CMD a Login u " + new string('p', 54)], ParserDriver.RunAllSplits(limits, line + "\r\n").Events);
        Assert.Equal(["CMD a Login u " + new string('p', 54)], ParserDriver.RunAllSplits(limits, line + "\n").Events);
    }

    [Fact]
    public void TryParse_LargestLiteralAccepted()
    {
        var limits = ParserDriver.SmallLimits;
        var value = new string('v', limits.MaxLiteralSize);

        var run = ParserDriver.RunAllSplits(limits, $"a LOGIN u {{{limits.MaxLiteralSize}}}\r\n{value}\r\n");

        Assert.Equal(["+", $"CMD a Login u \"{value}\""], run.Events);
    }

    [Fact]
    public void TryParse_TagOf63Bytes_IsKept()
    {
        var tag = new string('t', 63);

        var run = ParserDriver.RunAllSplits(s_defaults, tag + " NOOP\r\n");

        Assert.Equal([$"CMD {tag} Noop"], run.Events);
    }

    [Fact]
    public void TryParse_PartialLine_IsLeftUnconsumed()
    {
        var run = ParserDriver.Run(s_defaults, "a NOOP\r\nb LOGIN us");

        Assert.Equal(["CMD a Noop"], run.Events);
        Assert.Equal("b LOGIN us"u8.ToArray(), run.Unconsumed);
        Assert.True(run.AtCommandStart);
    }

    [Fact]
    public void TryParse_PartialLiteral_IsTakenByTheParser()
    {
        var run = ParserDriver.Run(s_defaults, "a LOGIN {8}\r\nuse");

        Assert.Equal(["+"], run.Events);
        Assert.Empty(run.Unconsumed);
        Assert.False(run.AtCommandStart);
    }

    [Fact]
    public void TryParse_LiteralInSmallReads_DoesNotPileUpInThePipe()
    {
        var literal = new string('x', 4000);
        var input = Splits.Bytes($"a LOGIN user {{4000}}\r\n{literal}\r\n");

        var run = ParserDriver.Run(s_defaults, Splits.InChunksOf(input, 100));

        Assert.Equal(["+", $"CMD a Login user \"{literal}\""], run.Events);
        Assert.True(run.HighWaterMark <= 200, $"high-water mark {run.HighWaterMark}");
    }

    [Fact]
    public void TryParse_NoInput_NeedsMoreData()
    {
        var parser = new ImapCommandParser(s_defaults);
        var reader = new SequenceReader<byte>(ReadOnlySequence<byte>.Empty);

        Assert.Equal(ParseStatus.NeedMoreData, parser.TryParse(ref reader, out var command, out _));
        Assert.Null(command);
        Assert.True(parser.IsAtCommandStart);
    }

    [Fact]
    public void Reset_ForgetsAPartialCommand()
    {
        var parser = new ImapCommandParser(s_defaults);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>("a LOGIN {5}\r\nab"u8.ToArray()));
        Assert.Equal(ParseStatus.ContinuationRequired, parser.TryParse(ref reader, out _, out _));
        Assert.Equal(ParseStatus.NeedMoreData, parser.TryParse(ref reader, out _, out _));
        Assert.False(parser.IsAtCommandStart);

        parser.Reset();

        Assert.True(parser.IsAtCommandStart);
        reader = new SequenceReader<byte>(new ReadOnlySequence<byte>("b NOOP\r\n"u8.ToArray()));
        Assert.Equal(ParseStatus.Command, parser.TryParse(ref reader, out var command, out _));
        Assert.Equal("b Noop", ParserDriver.Render(command!));
    }

    [Fact]
    public void ClearArguments_ZeroesEveryValue()
    {
        var parser = new ImapCommandParser(s_defaults);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>("a ID (\"k\" \"secret\") pw\r\n"u8.ToArray()));
        Assert.Equal(ParseStatus.Command, parser.TryParse(ref reader, out var command, out _));
        var list = command!.Arguments[0];
        var password = command.Arguments[1].Value;

        command.ClearArguments();

        Assert.All(list.Items, item => Assert.All(item.Value, b => Assert.Equal(0, b)));
        Assert.All(password, b => Assert.Equal(0, b));
    }

    [Theory]
    [InlineData("{5}", 5L, true)]
    [InlineData("{5+}", 5L, false)]
    [InlineData("{0}", 0L, true)]
    [InlineData("{007+}", 7L, false)]
    [InlineData("{999999999999999999}", 999999999999999999L, true)]
    [InlineData("{9999999999999999999999}", long.MaxValue, true)]
    [InlineData("{9999999999999999999999+}", long.MaxValue, false)]
    public void TryParseLiteralMarker_Valid(string marker, long length, bool sync)
    {
        Assert.True(ImapCommandParser.TryParseLiteralMarker(Splits.Bytes(marker), out var parsedLength, out var parsedSync));
        Assert.Equal(length, parsedLength);
        Assert.Equal(sync, parsedSync);
    }

    [Theory]
    [InlineData("{}")]
    [InlineData("{+}")]
    [InlineData("{5")]
    [InlineData("5}")]
    [InlineData("{-1}")]
    [InlineData("{5 }")]
    [InlineData("{ 5}")]
    [InlineData("{5++}")]
    [InlineData("{+5}")]
    [InlineData("{5}x")]
    [InlineData("{a}")]
    public void TryParseLiteralMarker_Invalid(string marker)
    {
        Assert.False(ImapCommandParser.TryParseLiteralMarker(Splits.Bytes(marker), out _, out _));
    }
}
