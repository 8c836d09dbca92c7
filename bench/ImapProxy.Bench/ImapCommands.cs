using System.Globalization;
using System.Text;

namespace ImapProxy.Bench;

/// <summary>Pre-encoded commands and their one-letter tags. Commands are never pipelined, so a tag is reused.</summary>
internal static class ImapCommands
{
    public const byte LoginTag = (byte)'a';
    public const byte LogoutTag = (byte)'b';
    public const byte NoopTag = (byte)'n';
    public const byte SelectTag = (byte)'s';
    public const byte FetchTag = (byte)'f';
    public const byte SearchTag = (byte)'u';
    public const byte BodyTag = (byte)'g';
    public const byte IdleTag = (byte)'i';

    public static ReadOnlyMemory<byte> Logout { get; } = "b LOGOUT\r\n"u8.ToArray();

    public static ReadOnlyMemory<byte> Noop { get; } = "n NOOP\r\n"u8.ToArray();

    public static ReadOnlyMemory<byte> FetchFlagsEnvelope { get; } = "f FETCH 1:* (FLAGS ENVELOPE)\r\n"u8.ToArray();

    public static ReadOnlyMemory<byte> Idle { get; } = "i IDLE\r\n"u8.ToArray();

    public static ReadOnlyMemory<byte> Done { get; } = "DONE\r\n"u8.ToArray();

    public static byte[] Login(string user, string password) =>
        Encoding.UTF8.GetBytes($"a LOGIN {Quote(user)} {Quote(password)}\r\n");

    public static byte[] Select(string mailbox) => Encoding.UTF8.GetBytes($"s SELECT {Quote(mailbox)}\r\n");

    public static byte[] UidSearchLarger(long size) =>
        Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture, $"u UID SEARCH LARGER {size}\r\n"));

    public static byte[] UidFetchBody(long uid) =>
        Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture, $"g UID FETCH {uid} (BODY.PEEK[])\r\n"));

    // A quoted string (RFC 3501 §4.3): backslash and double quote escaped; CR and LF are not allowed in one.
    private static string Quote(string value) =>
        "\"" + value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"";
}
