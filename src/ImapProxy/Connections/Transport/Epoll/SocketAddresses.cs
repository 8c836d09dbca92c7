using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace ImapProxy.Connections.Transport.Epoll;

/// <summary>Linux socket addresses (<c>sockaddr_in</c>, <c>sockaddr_in6</c>) as the engine's own system calls use them.</summary>
internal static class SocketAddresses
{
    /// <summary>Room for any address accept4 and getsockname return here (<c>sockaddr_storage</c>).</summary>
    public const int MaxSize = 128;

    private const int AfInet = 2;
    private const int AfInet6 = 10;

    /// <summary>The Linux address family (AF_INET, AF_INET6) for a socket of <paramref name="family"/>.</summary>
    public static int Family(AddressFamily family) => family switch
    {
        AddressFamily.InterNetwork => AfInet,
        AddressFamily.InterNetworkV6 => AfInet6,
        _ => throw new SocketException((int)SocketError.AddressFamilyNotSupported),
    };

    /// <summary>
    /// The endpoint a <c>sockaddr_in</c> or <c>sockaddr_in6</c> holds (an IPv4 client of a dual-mode socket stays
    /// IPv4-mapped, as <see cref="Socket.RemoteEndPoint"/> gives it); any other family is a <see cref="SocketException"/>.
    /// </summary>
    public static IPEndPoint ToEndPoint(ReadOnlySpan<byte> address)
    {
        // Family in host order, port in network order, then the address (IPv6: after the flow label, scope id behind).
        if (address.Length >= 8 && BitConverter.ToUInt16(address) == AfInet)
        {
            return new IPEndPoint(new IPAddress(address.Slice(4, 4)), BinaryPrimitives.ReadUInt16BigEndian(address[2..]));
        }

        if (address.Length >= 28 && BitConverter.ToUInt16(address) == AfInet6)
        {
            var scope = BitConverter.ToUInt32(address[24..]);
            return new IPEndPoint(new IPAddress(address.Slice(8, 16), scope), BinaryPrimitives.ReadUInt16BigEndian(address[2..]));
        }

        throw new SocketException((int)SocketError.AddressFamilyNotSupported);
    }
}
