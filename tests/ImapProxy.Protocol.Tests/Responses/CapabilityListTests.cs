using ImapProxy.Protocol.Responses;
using ImapProxy.Protocol.Tests.TestSupport;

namespace ImapProxy.Protocol.Tests.Responses;

public sealed class CapabilityListTests
{
    private const string List = "IMAP4rev1 SASL-IR LITERAL+ AUTH=PLAIN AUTH=LOGIN ID";

    [Theory]
    [InlineData("IMAP4rev1")]
    [InlineData("imap4REV1")]
    [InlineData("AUTH=PLAIN")]
    [InlineData("auth=plain")]
    [InlineData("LITERAL+")]
    [InlineData("ID")]
    public void Contains_WholeToken(string capability)
    {
        Assert.True(CapabilityList.Contains(Splits.Bytes(List), Splits.Bytes(capability)));
    }

    [Theory]
    [InlineData("IMAP4")]
    [InlineData("IMAP4rev2")]
    [InlineData("AUTH")]
    [InlineData("AUTH=")]
    [InlineData("PLAIN")]
    [InlineData("AUTH=PLAI")]
    [InlineData("LITERAL-")]
    [InlineData("LITERAL")]
    [InlineData("I")]
    [InlineData("IDLE")]
    [InlineData("SASL-IR LITERAL+")]
    [InlineData("")]
    public void Contains_NotAPrefixOrSubstring(string capability)
    {
        Assert.False(CapabilityList.Contains(Splits.Bytes(List), Splits.Bytes(capability)));
    }

    [Fact]
    public void Contains_EmptyList()
    {
        Assert.False(CapabilityList.Contains(default, "IMAP4rev1"u8));
    }

    [Fact]
    public void Contains_SingleToken()
    {
        Assert.True(CapabilityList.Contains("IDLE"u8, "IDLE"u8));
        Assert.False(CapabilityList.Contains("IDLE"u8, "ID"u8));
    }

    [Theory]
    [InlineData("CAPABILITY IMAP4rev1 IDLE", "IMAP4rev1 IDLE")]
    [InlineData("capability X", "X")]
    [InlineData("CAPABILITY", "")]
    [InlineData("CAPABILITYX IMAP4rev1", "")]
    [InlineData("CAPABILITIES IMAP4rev1", "")]
    [InlineData("ALERT", "")]
    [InlineData("", "")]
    public void FromCodeAndFromData(string text, string expected)
    {
        Assert.Equal(expected, Splits.Text(CapabilityList.FromCode(Splits.Bytes(text))));
        Assert.Equal(expected, Splits.Text(CapabilityList.FromData(Splits.Bytes(text))));
    }
}
