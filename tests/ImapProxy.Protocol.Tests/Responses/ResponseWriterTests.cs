using System.Buffers;
using ImapProxy.Protocol.Responses;
using ImapProxy.Protocol.Tests.TestSupport;

namespace ImapProxy.Protocol.Tests.Responses;

public sealed class ResponseWriterTests
{
    private readonly ArrayBufferWriter<byte> _output = new();

    private string Written => Splits.Text(_output.WrittenSpan);

    [Fact]
    public void WriteTagged_WithoutCode()
    {
        ResponseWriter.WriteTagged(_output, "a1"u8, ImapStatus.Ok, default, "Done."u8);

        Assert.Equal("a1 OK Done.\r\n", Written);
    }

    [Fact]
    public void WriteTagged_WithCode()
    {
        ResponseWriter.WriteTagged(_output, "a1"u8, ImapStatus.No, "AUTHENTICATIONFAILED"u8, "Authentication failed."u8);

        Assert.Equal("a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", Written);
    }

    [Fact]
    public void WriteUntaggedStatus()
    {
        ResponseWriter.WriteUntaggedStatus(_output, ImapStatus.Bye, default, "Logging out."u8);
        ResponseWriter.WriteUntaggedStatus(_output, ImapStatus.Ok, "CAPABILITY IMAP4rev1"u8, "Ready."u8);

        Assert.Equal("* BYE Logging out.\r\n* OK [CAPABILITY IMAP4rev1] Ready.\r\n", Written);
    }

    [Fact]
    public void WriteUntagged()
    {
        ResponseWriter.WriteUntagged(_output, "CAPABILITY IMAP4rev1 IDLE"u8);

        Assert.Equal("* CAPABILITY IMAP4rev1 IDLE\r\n", Written);
    }

    [Fact]
    public void WriteContinuation()
    {
        ResponseWriter.WriteContinuation(_output, default);
        ResponseWriter.WriteContinuation(_output, "VXNlcm5hbWU6"u8);

        Assert.Equal("+ \r\n+ VXNlcm5hbWU6\r\n", Written);
    }

    [Fact]
    public void WriteAscii()
    {
        ResponseWriter.WriteAscii(_output, "Too many invalid commands.");

        Assert.Equal("Too many invalid commands.", Written);
    }

    [Theory]
    [InlineData(ImapStatus.Ok, "OK")]
    [InlineData(ImapStatus.No, "NO")]
    [InlineData(ImapStatus.Bad, "BAD")]
    [InlineData(ImapStatus.Bye, "BYE")]
    [InlineData(ImapStatus.PreAuth, "PREAUTH")]
    public void StatusBytes(ImapStatus status, string expected)
    {
        Assert.Equal(expected, Splits.Text(ResponseWriter.StatusBytes(status)));
    }

    [Fact]
    public void Write_LargerThanTheWritersInitialBuffer()
    {
        var output = new ArrayBufferWriter<byte>(1);
        var bytes = Enumerable.Repeat((byte)'x', 10_000).ToArray();

        ResponseWriter.WriteTagged(output, "a"u8, ImapStatus.Ok, bytes, bytes);

        Assert.Equal(2 + 3 + 10_000 + 3 + 10_000 + 2, output.WrittenCount);
    }
}
