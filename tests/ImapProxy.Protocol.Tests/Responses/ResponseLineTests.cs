using ImapProxy.Protocol.Responses;
using ImapProxy.Protocol.Tests.TestSupport;

namespace ImapProxy.Protocol.Tests.Responses;

public sealed class ResponseLineTests
{
    [Fact]
    public void UntaggedOkWithCapabilityCode()
    {
        Assert.True(ResponseLine.TryParse("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] Dovecot ready."u8, out var line));

        Assert.Equal(ResponseKind.Untagged, line.Kind);
        Assert.Equal("*", Splits.Text(line.Tag));
        Assert.Equal(ImapStatus.Ok, line.Status);
        Assert.Equal("CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN", Splits.Text(line.Code));
        Assert.Equal("CAPABILITY", Splits.Text(line.CodeName));
        Assert.Equal("IMAP4rev1 SASL-IR AUTH=PLAIN", Splits.Text(line.CodeCapabilities));
        Assert.Equal("Dovecot ready.", Splits.Text(line.Text));
        Assert.True(line.DataCapabilities.IsEmpty);
    }

    [Fact]
    public void TaggedOkWithCapabilityCode()
    {
        Assert.True(ResponseLine.TryParse("a1 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in"u8, out var line));

        Assert.Equal(ResponseKind.Tagged, line.Kind);
        Assert.Equal("a1", Splits.Text(line.Tag));
        Assert.Equal(ImapStatus.Ok, line.Status);
        Assert.Equal("IMAP4rev1 IDLE MOVE", Splits.Text(line.CodeCapabilities));
        Assert.Equal("Logged in", Splits.Text(line.Text));
    }

    [Fact]
    public void UntaggedCapabilityData()
    {
        Assert.True(ResponseLine.TryParse("* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN"u8, out var line));

        Assert.Equal(ResponseKind.Untagged, line.Kind);
        Assert.Null(line.Status);
        Assert.Equal("CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN", Splits.Text(line.Data));
        Assert.Equal("IMAP4rev1 STARTTLS AUTH=PLAIN", Splits.Text(line.DataCapabilities));
        Assert.True(line.Code.IsEmpty);
        Assert.True(line.CodeCapabilities.IsEmpty);
    }

    [Theory]
    [InlineData("a NO [AUTHENTICATIONFAILED] Authentication failed.", ResponseKind.Tagged, ImapStatus.No, "AUTHENTICATIONFAILED", "AUTHENTICATIONFAILED", "Authentication failed.")]
    [InlineData("a BAD Error in IMAP command", ResponseKind.Tagged, ImapStatus.Bad, "", "", "Error in IMAP command")]
    [InlineData("* BYE Server shutting down", ResponseKind.Untagged, ImapStatus.Bye, "", "", "Server shutting down")]
    [InlineData("* PREAUTH [CAPABILITY IMAP4rev1] Logged in as x", ResponseKind.Untagged, ImapStatus.PreAuth, "CAPABILITY IMAP4rev1", "CAPABILITY", "Logged in as x")]
    [InlineData("* ok lower case", ResponseKind.Untagged, ImapStatus.Ok, "", "", "lower case")]
    [InlineData("A.1 Ok done", ResponseKind.Tagged, ImapStatus.Ok, "", "", "done")]
    [InlineData("a OK", ResponseKind.Tagged, ImapStatus.Ok, "", "", "")]
    [InlineData("a OK [READ-WRITE]", ResponseKind.Tagged, ImapStatus.Ok, "READ-WRITE", "READ-WRITE", "")]
    [InlineData("a NO [BADCHARSET (UTF-8 US-ASCII)] x", ResponseKind.Tagged, ImapStatus.No, "BADCHARSET (UTF-8 US-ASCII)", "BADCHARSET", "x")]
    [InlineData("* OK [ALERT]text", ResponseKind.Untagged, ImapStatus.Ok, "ALERT", "ALERT", "text")]
    [InlineData("a NO [UNAVAILABLE] [x] y", ResponseKind.Tagged, ImapStatus.No, "UNAVAILABLE", "UNAVAILABLE", "[x] y")]
    [InlineData("a OK text [NOTACODE]", ResponseKind.Tagged, ImapStatus.Ok, "", "", "text [NOTACODE]")]
    public void StatusResponses(string text, ResponseKind kind, ImapStatus status, string code, string codeName, string humanText)
    {
        Assert.True(ResponseLine.TryParse(Splits.Bytes(text), out var line));

        Assert.Equal(kind, line.Kind);
        Assert.Equal(status, line.Status);
        Assert.Equal(code, Splits.Text(line.Code));
        Assert.Equal(codeName, Splits.Text(line.CodeName));
        Assert.Equal(humanText, Splits.Text(line.Text));
    }

    [Theory]
    [InlineData("* 3 EXISTS", "3 EXISTS")]
    [InlineData("* ID (\"name\" \"Dovecot\")", "ID (\"name\" \"Dovecot\")")]
    [InlineData("* ENABLED", "ENABLED")]
    [InlineData("* OKAY x", "OKAY x")]
    public void UntaggedData(string text, string data)
    {
        Assert.True(ResponseLine.TryParse(Splits.Bytes(text), out var line));

        Assert.Equal(ResponseKind.Untagged, line.Kind);
        Assert.Null(line.Status);
        Assert.Equal(data, Splits.Text(line.Data));
        Assert.True(line.DataCapabilities.IsEmpty);
    }

    [Theory]
    [InlineData("+", "")]
    [InlineData("+ ", "")]
    [InlineData("+ VXNlcm5hbWU6", "VXNlcm5hbWU6")]
    [InlineData("+ Ready for literal data", "Ready for literal data")]
    [InlineData("+VXNl", "VXNl")]
    public void Continuation(string text, string expected)
    {
        Assert.True(ResponseLine.TryParse(Splits.Bytes(text), out var line));

        Assert.Equal(ResponseKind.Continuation, line.Kind);
        Assert.Null(line.Status);
        Assert.Equal(expected, Splits.Text(line.Text));
    }

    [Theory]
    [InlineData("")]
    [InlineData("*")]
    [InlineData("a")]
    [InlineData(" OK x")]
    [InlineData("a FOO bar")]
    [InlineData("a  OK x")]
    [InlineData("a OKAY x")]
    [InlineData("a OK [CAPABILITY IMAP4rev1")]
    [InlineData("* OK [ALERT x")]
    public void Malformed(string text)
    {
        Assert.False(ResponseLine.TryParse(Splits.Bytes(text), out _));
    }
}
