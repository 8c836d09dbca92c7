using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace ImapProxy.Backends;

/// <summary>PROXY protocol v2 header (haproxy's proxy-protocol.txt §2.2) sent first to backends that want it.</summary>
internal static class ProxyProtocolHeader
{
    private static ReadOnlySpan<byte> Signature => [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

    public static byte[] CreateV2(IPEndPoint source, IPEndPoint destination)
    {
        var src = Normalize(source.Address);
        var dst = Normalize(destination.Address);
        if (src.AddressFamily != dst.AddressFamily)
        {
            // Mixed families: send both as IPv6 (IPv4-mapped).
            src = src.MapToIPv6();
            dst = dst.MapToIPv6();
        }

        var v4 = src.AddressFamily == AddressFamily.InterNetwork;
        var addressLength = v4 ? 12 : 36;
        var header = new byte[16 + addressLength];
        Signature.CopyTo(header);
        header[12] = 0x21; // version 2, command PROXY
        header[13] = v4 ? (byte)0x11 : (byte)0x21; // TCP over IPv4 / IPv6
        BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(14), (ushort)addressLength);
        var addressBytes = v4 ? 4 : 16;
        src.TryWriteBytes(header.AsSpan(16), out _);
        dst.TryWriteBytes(header.AsSpan(16 + addressBytes), out _);
        BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(16 + (2 * addressBytes)), (ushort)source.Port);
        BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(18 + (2 * addressBytes)), (ushort)destination.Port);
        return header;
    }

    private static IPAddress Normalize(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;
}
