using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Text;

namespace ImapProxy.Protocol.ProxyProtocol;

public enum ProxyHeaderStatus
{
    NeedMoreData,
    Complete,
    Invalid,
}

/// <summary>
/// What a PROXY header said. <see cref="Source"/> and <see cref="Destination"/> are null for "UNKNOWN" (v1) and
/// LOCAL (v2) headers, where the connection's own addresses stay in force (health checks of the balancer).
/// </summary>
public readonly record struct ProxyHeader(IPEndPoint? Source, IPEndPoint? Destination);

/// <summary>
/// The PROXY protocol header, v1 (text) and v2 (binary), as haproxy's proxy-protocol.txt defines them. Nothing is
/// consumed until the whole header is there; anything malformed is invalid (the connection is closed).
/// </summary>
public static class ProxyHeaderParser
{
    /// <summary>A v1 line is at most 107 bytes with its CRLF.</summary>
    public const int MaxV1Length = 107;

    /// <summary>v2 TLVs beyond this are refused (a header is addresses plus a few small TLVs).</summary>
    public const int MaxV2Length = 16 + 2048;

    private static ReadOnlySpan<byte> V2Signature => [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

    public static ProxyHeaderStatus TryParse(ref SequenceReader<byte> reader, out ProxyHeader header)
    {
        header = default;
        Span<byte> head = stackalloc byte[16];
        var available = (int)Math.Min(reader.Remaining, head.Length);
        reader.TryCopyTo(head[..available]);
        head = head[..available];

        if (head.Length > 0 && head[0] == V2Signature[0])
        {
            if (!V2Signature[..Math.Min(head.Length, 12)].SequenceEqual(head[..Math.Min(head.Length, 12)]))
            {
                return ProxyHeaderStatus.Invalid;
            }

            return head.Length < 16 ? ProxyHeaderStatus.NeedMoreData : ParseV2(ref reader, head[12], head[13], BinaryPrimitives.ReadUInt16BigEndian(head[14..]), out header);
        }

        if (!"PROXY "u8[..Math.Min(head.Length, 6)].SequenceEqual(head[..Math.Min(head.Length, 6)]))
        {
            return ProxyHeaderStatus.Invalid;
        }

        return ParseV1(ref reader, out header);
    }

    private static ProxyHeaderStatus ParseV1(ref SequenceReader<byte> reader, out ProxyHeader header)
    {
        header = default;
        var window = reader.UnreadSequence.Slice(0, Math.Min(reader.Remaining, MaxV1Length));
        var lf = window.PositionOf((byte)'\n');
        if (lf is null)
        {
            return window.Length >= MaxV1Length ? ProxyHeaderStatus.Invalid : ProxyHeaderStatus.NeedMoreData;
        }

        var line = Encoding.ASCII.GetString(window.Slice(0, lf.Value));
        if (!line.EndsWith('\r'))
        {
            return ProxyHeaderStatus.Invalid;
        }

        var parts = line[..^1].Split(' ');
        if (parts.Length >= 2 && parts[1] == "UNKNOWN")
        {
            reader.Advance(window.Slice(0, lf.Value).Length + 1);
            return ProxyHeaderStatus.Complete;
        }

        if (parts.Length != 6 || (parts[1] != "TCP4" && parts[1] != "TCP6") ||
            !IPAddress.TryParse(parts[2], out var source) || !IPAddress.TryParse(parts[3], out var destination) ||
            !TryParsePort(parts[4], out var sourcePort) || !TryParsePort(parts[5], out var destinationPort) ||
            (source.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork) != (parts[1] == "TCP4"))
        {
            return ProxyHeaderStatus.Invalid;
        }

        reader.Advance(window.Slice(0, lf.Value).Length + 1);
        header = new ProxyHeader(new IPEndPoint(source, sourcePort), new IPEndPoint(destination, destinationPort));
        return ProxyHeaderStatus.Complete;
    }

    private static ProxyHeaderStatus ParseV2(ref SequenceReader<byte> reader, byte versionCommand, byte family, ushort length, out ProxyHeader header)
    {
        header = default;
        if (versionCommand >> 4 != 2 || (versionCommand & 0x0F) > 1 || 16 + length > MaxV2Length)
        {
            return ProxyHeaderStatus.Invalid;
        }

        if (reader.Remaining < 16 + length)
        {
            return ProxyHeaderStatus.NeedMoreData;
        }

        var body = new byte[length];
        reader.Advance(16);
        reader.TryCopyTo(body);
        reader.Advance(length);

        // LOCAL: the balancer speaking for itself (health checks); keep the connection's addresses.
        if ((versionCommand & 0x0F) == 0)
        {
            return ProxyHeaderStatus.Complete;
        }

        switch (family)
        {
            case 0x11 when length >= 12: // TCP over IPv4
                header = new ProxyHeader(
                    new IPEndPoint(new IPAddress(body.AsSpan(0, 4)), BinaryPrimitives.ReadUInt16BigEndian(body.AsSpan(8))),
                    new IPEndPoint(new IPAddress(body.AsSpan(4, 4)), BinaryPrimitives.ReadUInt16BigEndian(body.AsSpan(10))));
                return ProxyHeaderStatus.Complete;
            case 0x21 when length >= 36: // TCP over IPv6
                header = new ProxyHeader(
                    new IPEndPoint(new IPAddress(body.AsSpan(0, 16)), BinaryPrimitives.ReadUInt16BigEndian(body.AsSpan(32))),
                    new IPEndPoint(new IPAddress(body.AsSpan(16, 16)), BinaryPrimitives.ReadUInt16BigEndian(body.AsSpan(34))));
                return ProxyHeaderStatus.Complete;
            case 0x00: // UNSPEC
                return ProxyHeaderStatus.Complete;
            default:
                return ProxyHeaderStatus.Invalid;
        }
    }

    private static bool TryParsePort(string text, out int port) =>
        int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out port) && port is > 0 and <= 65535;
}
