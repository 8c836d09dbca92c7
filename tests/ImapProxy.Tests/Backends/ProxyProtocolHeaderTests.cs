using System.Net;
using ImapProxy.Backends;
using Xunit;

namespace ImapProxy.Tests.Backends;

public class ProxyProtocolHeaderTests
{
    [Fact]
    public void CreateV2_Ipv4_MatchesTheSpecLayout()
    {
        var header = ProxyProtocolHeader.CreateV2(new IPEndPoint(IPAddress.Parse("192.0.2.1"), 50000), new IPEndPoint(IPAddress.Parse("198.51.100.2"), 993));
        byte[] expected =
        [
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, // signature
            0x21, 0x11, 0x00, 0x0C, // v2 PROXY, TCP4, 12 address bytes
            192, 0, 2, 1, 198, 51, 100, 2,
            0xC3, 0x50, 0x03, 0xE1, // 50000, 993
        ];
        Assert.Equal(expected, header);
    }

    [Fact]
    public void CreateV2_MappedIpv4_IsSentAsIpv4()
    {
        var header = ProxyProtocolHeader.CreateV2(new IPEndPoint(IPAddress.Parse("::ffff:192.0.2.1"), 1), new IPEndPoint(IPAddress.Parse("192.0.2.2"), 2));
        Assert.Equal(0x11, header[13]);
        Assert.Equal(28, header.Length);
    }

    [Fact]
    public void CreateV2_Ipv6_Uses36AddressBytes()
    {
        var header = ProxyProtocolHeader.CreateV2(new IPEndPoint(IPAddress.IPv6Loopback, 1), new IPEndPoint(IPAddress.Parse("2001:db8::1"), 2));
        Assert.Equal(0x21, header[13]);
        Assert.Equal(16 + 36, header.Length);
    }

    [Theory]
    [InlineData("192.0.2.1", 50000, "198.51.100.2", 993)]
    [InlineData("2001:db8::7", 1234, "2001:db8::8", 143)]
    public void CreateV2_IsReadBackByTheListenersParser(string source, int sourcePort, string destination, int destinationPort)
    {
        var header = ProxyProtocolHeader.CreateV2(new IPEndPoint(IPAddress.Parse(source), sourcePort), new IPEndPoint(IPAddress.Parse(destination), destinationPort));
        var reader = new System.Buffers.SequenceReader<byte>(new System.Buffers.ReadOnlySequence<byte>(header));
        Assert.Equal(ImapProxy.Protocol.ProxyProtocol.ProxyHeaderStatus.Complete, ImapProxy.Protocol.ProxyProtocol.ProxyHeaderParser.TryParse(ref reader, out var parsed));
        Assert.Equal(new IPEndPoint(IPAddress.Parse(source), sourcePort), parsed.Source);
        Assert.Equal(new IPEndPoint(IPAddress.Parse(destination), destinationPort), parsed.Destination);
        Assert.Equal(header.Length, reader.Consumed);
    }
}
