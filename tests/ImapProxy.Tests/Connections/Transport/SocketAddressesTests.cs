using System.Net;
using System.Net.Sockets;
using ImapProxy.Connections.Transport.Epoll;
using Xunit;

namespace ImapProxy.Tests.Connections.Transport;

/// <summary>
/// Linux socket addresses as accept4 and getsockname fill them in, checked against what .NET writes for the same
/// endpoint (<see cref="EndPoint.Serialize"/>, the platform's layout). IPv6 is covered here only: the tests bind to
/// 127.0.0.0/8 alone.
/// </summary>
public sealed class SocketAddressesTests
{
    public static TheoryData<string, int> Endpoints => new()
    {
        { "127.0.0.1", 143 },
        { "192.0.2.200", 65535 },
        { "::1", 993 },
        { "::ffff:198.51.100.7", 40123 }, // an IPv4 client of a dual-mode listener
        { "2001:db8::1234", 1 },
    };

    [Theory]
    [MemberData(nameof(Endpoints))]
    public void ToEndPoint_ReadsTheAddressAndPort_AsThePlatformLaysThemOut(string address, int port)
    {
        var expected = new IPEndPoint(IPAddress.Parse(address), port);

        var parsed = SocketAddresses.ToEndPoint(expected.Serialize().Buffer.Span);

        Assert.Equal(expected, parsed);
    }

    [Fact]
    public void ToEndPoint_KeepsAnIPv6ScopeId()
    {
        var expected = new IPEndPoint(new IPAddress(IPAddress.Parse("fe80::1").GetAddressBytes(), scopeid: 3), 143);

        var parsed = SocketAddresses.ToEndPoint(expected.Serialize().Buffer.Span);

        Assert.Equal(3, parsed.Address.ScopeId);
        Assert.Equal(expected, parsed);
    }

    [Fact]
    public void ToEndPoint_RefusesOtherFamiliesAndShortAddresses()
    {
        var unix = new byte[110];
        unix[0] = 1; // AF_UNIX
        Assert.Equal(SocketError.AddressFamilyNotSupported, Assert.Throws<SocketException>(() => SocketAddresses.ToEndPoint(unix)).SocketErrorCode);

        var truncated = new IPEndPoint(IPAddress.IPv6Loopback, 143).Serialize().Buffer.Span[..20].ToArray();
        Assert.Throws<SocketException>(() => SocketAddresses.ToEndPoint(truncated));
    }

    [Theory]
    [InlineData(AddressFamily.InterNetwork, 2)]
    [InlineData(AddressFamily.InterNetworkV6, 10)]
    public void Family_IsLinuxsNumber(AddressFamily family, int linux) => Assert.Equal(linux, SocketAddresses.Family(family));
}
