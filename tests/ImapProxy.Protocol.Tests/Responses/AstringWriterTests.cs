using System.Buffers;
using ImapProxy.Protocol.Parsing;
using ImapProxy.Protocol.Responses;
using ImapProxy.Protocol.Tests.TestSupport;

namespace ImapProxy.Protocol.Tests.Responses;

public sealed class AstringWriterTests
{
    [Theory]
    [InlineData("user")]
    [InlineData("")]
    [InlineData("p a\"s\\s")]
    [InlineData("NIL")]
    [InlineData("{5}")]
    [InlineData("(x) %*]")]
    [InlineData("\u0001\t\u001F\u007F")]
    public void ChooseForm_SevenBitWithoutCrLfNul_Quoted(string value)
    {
        Assert.Equal(AstringForm.Quoted, AstringWriter.ChooseForm(Splits.Bytes(value)));
    }

    [Theory]
    [InlineData("a\rb")]
    [InlineData("a\nb")]
    [InlineData("\r\n")]
    [InlineData("a\0b")]
    [InlineData("p\u00E4ss")]
    [InlineData("\u0080")]
    [InlineData("\u00FF")]
    public void ChooseForm_CrLfNulOrEightBit_Literal(string value)
    {
        Assert.Equal(AstringForm.Literal, AstringWriter.ChooseForm(Splits.Bytes(value)));
    }

    [Fact]
    public void ChooseForm_Long_Literal()
    {
        Assert.Equal(AstringForm.Quoted, AstringWriter.ChooseForm(Enumerable.Repeat((byte)'x', 1024).ToArray()));
        Assert.Equal(AstringForm.Literal, AstringWriter.ChooseForm(Enumerable.Repeat((byte)'x', 1025).ToArray()));
    }

    [Theory]
    [InlineData("user", "\"user\"")]
    [InlineData("", "\"\"")]
    [InlineData("p a\"s\\s", "\"p a\\\"s\\\\s\"")]
    [InlineData("\"\"\\\\", "\"\\\"\\\"\\\\\\\\\"")]
    public void WriteQuoted_EscapesQuoteAndBackslash(string value, string expected)
    {
        var output = new ArrayBufferWriter<byte>();

        AstringWriter.WriteQuoted(output, Splits.Bytes(value));

        Assert.Equal(expected, Splits.Text(output.WrittenSpan));
    }

    [Theory]
    [InlineData(0, false, "{0}\r\n")]
    [InlineData(5, false, "{5}\r\n")]
    [InlineData(5, true, "{5+}\r\n")]
    [InlineData(int.MaxValue, true, "{2147483647+}\r\n")]
    public void WriteLiteralHeader(int length, bool nonSynchronising, string expected)
    {
        var output = new ArrayBufferWriter<byte>();

        AstringWriter.WriteLiteralHeader(output, length, nonSynchronising);

        Assert.Equal(expected, Splits.Text(output.WrittenSpan));
    }

    [Fact]
    public void WriteQuoted_EveryQuotableByte_ParsesBackToTheSameBytes()
    {
        var value = Enumerable.Range(1, 0x7F).Where(b => b is not '\r' and not '\n').Select(b => (byte)b).ToArray();
        Assert.Equal(AstringForm.Quoted, AstringWriter.ChooseForm(value));
        var output = new ArrayBufferWriter<byte>();
        ResponseWriter.Write(output, "a LOGIN "u8);
        AstringWriter.WriteQuoted(output, value);
        ResponseWriter.Write(output, " x\r\n"u8);

        var command = ParseOne(output.WrittenMemory);

        Assert.Equal(value, command.Arguments[0].Value);
    }

    [Fact]
    public void WriteLiteral_EveryByte_ParsesBackToTheSameBytes()
    {
        var value = Enumerable.Range(0, 256).Select(b => (byte)b).ToArray();
        Assert.Equal(AstringForm.Literal, AstringWriter.ChooseForm(value));
        var output = new ArrayBufferWriter<byte>();
        ResponseWriter.Write(output, "a LOGIN u "u8);
        AstringWriter.WriteLiteralHeader(output, value.Length, nonSynchronising: true);
        ResponseWriter.Write(output, value);
        ResponseWriter.Write(output, "\r\n"u8);

        var command = ParseOne(output.WrittenMemory);

        Assert.Equal(value, command.Arguments[1].Value);
    }

    private static ImapCommand ParseOne(ReadOnlyMemory<byte> bytes)
    {
        var parser = new ImapCommandParser(new ImapParserLimits());
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
        Assert.Equal(ParseStatus.Command, parser.TryParse(ref reader, out var command, out _));
        Assert.True(reader.End);
        return command!;
    }
}
