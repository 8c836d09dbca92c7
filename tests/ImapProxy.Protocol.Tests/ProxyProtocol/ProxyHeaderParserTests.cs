using System.Buffers;
using System.Net;
using System.Text;
using ImapProxy.Protocol.ProxyProtocol;

namespace ImapProxy.Protocol.Tests.ProxyProtocol;

public class ProxyHeaderParserTests
{
    private static readonly byte[] s_signature = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

    private static (ProxyHeaderStatus Status, ProxyHeader Header, long Consumed) Parse(byte[] input)
    {
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(input));
        var status = ProxyHeaderParser.TryParse(ref reader, out var header);
        return (status, header, reader.Consumed);
    }

    private static byte[] V2(byte command, byte family, byte[] addresses, byte[]? tlvs = null)
    {
        var body = addresses.Concat(tlvs ?? []).ToArray();
        return [.. s_signature, (byte)(0x20 | command), family, (byte)(body.Length >> 8), (byte)body.Length, .. body];
    }

    [Fact]
    public void V1_Tcp4_GivesBothEndpoints_AndConsumesOnlyTheHeader()
    {
        var input = Encoding.ASCII.GetBytes("PROXY TCP4 198.51.100.7 10.0.0.5 40000 993\r\n* after");
        var (status, header, consumed) = Parse(input);
        Assert.Equal(ProxyHeaderStatus.Complete, status);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("198.51.100.7"), 40000), header.Source);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("10.0.0.5"), 993), header.Destination);
        Assert.Equal(input.Length - "* after".Length, consumed);
    }

    [Fact]
    public void V1_Tcp6_AndUnknown()
    {
        var (status, header, _) = Parse(Encoding.ASCII.GetBytes("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"));
        Assert.Equal(ProxyHeaderStatus.Complete, status);
        Assert.Equal(IPAddress.Parse("2001:db8::1"), header.Source!.Address);

        (status, header, _) = Parse(Encoding.ASCII.GetBytes("PROXY UNKNOWN\r\n"));
        Assert.Equal(ProxyHeaderStatus.Complete, status);
        Assert.Null(header.Source);
    }

    [Theory]
    [InlineData("PROXY TCP4 198.51.100.7 10.0.0.5 40000 99999\r\n")]
    [InlineData("PROXY TCP4 2001:db8::1 10.0.0.5 1 2\r\n")]
    [InlineData("PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n")]
    [InlineData("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n")]
    [InlineData("a LOGIN alice secret\r\n")]
    [InlineData("GET / HTTP/1.1\r\n")]
    public void Malformed_IsInvalid(string input)
    {
        Assert.Equal(ProxyHeaderStatus.Invalid, Parse(Encoding.ASCII.GetBytes(input)).Status);
    }

    [Fact]
    public void V1_WithoutLineEndWithinTheLimit_IsInvalid()
    {
        Assert.Equal(ProxyHeaderStatus.Invalid, Parse(Encoding.ASCII.GetBytes("PROXY TCP4 " + new string('1', 120))).Status);
    }

    [Fact]
    public void V2_Ipv4_WithTlvs_AndLocal()
    {
        byte[] addresses = [198, 51, 100, 7, 10, 0, 0, 5, 0x9C, 0x40, 0x03, 0xE1];
        var (status, header, consumed) = Parse([.. V2(1, 0x11, addresses, [0x04, 0x00, 0x01, 0x00]), 0x16]);
        Assert.Equal(ProxyHeaderStatus.Complete, status);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("198.51.100.7"), 40000), header.Source);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("10.0.0.5"), 993), header.Destination);
        Assert.Equal(16 + 12 + 4, consumed);

        (status, header, _) = Parse(V2(0, 0x00, []));
        Assert.Equal(ProxyHeaderStatus.Complete, status);
        Assert.Null(header.Source);
    }

    [Fact]
    public void AnySplit_NeedsMoreUntilComplete()
    {
        byte[][] inputs =
        [
            Encoding.ASCII.GetBytes("PROXY TCP4 198.51.100.7 10.0.0.5 40000 993\r\n"),
            V2(1, 0x11, [198, 51, 100, 7, 10, 0, 0, 5, 0x9C, 0x40, 0x03, 0xE1]),
        ];
        foreach (var input in inputs)
        {
            for (var length = 0; length < input.Length; length++)
            {
                var (status, _, consumed) = Parse(input[..length]);
                Assert.Equal(ProxyHeaderStatus.NeedMoreData, status);
                Assert.Equal(0, consumed);
            }

            Assert.Equal(ProxyHeaderStatus.Complete, Parse(input).Status);
        }
    }

    [Fact]
    public void V2_TooLongOrBadVersion_IsInvalid()
    {
        byte[] tooLong = [.. s_signature, 0x21, 0x11, 0xFF, 0xFF];
        Assert.Equal(ProxyHeaderStatus.Invalid, Parse(tooLong).Status);
        byte[] version3 = [.. s_signature, 0x31, 0x11, 0x00, 0x0C];
        Assert.Equal(ProxyHeaderStatus.Invalid, Parse(version3).Status);
    }
}
