using System.Text;

namespace ImapProxy.Protocol.Responses;

/// <summary>Space-separated capability lists as they appear on the wire.</summary>
public static class CapabilityList
{
    /// <summary>True if the list holds the capability (case-insensitive, whole tokens only).</summary>
    public static bool Contains(ReadOnlySpan<byte> list, ReadOnlySpan<byte> capability)
    {
        while (!list.IsEmpty)
        {
            var space = list.IndexOf(ImapBytes.Space);
            var token = space >= 0 ? list[..space] : list;
            if (Ascii.EqualsIgnoreCase(token, capability))
            {
                return true;
            }

            if (space < 0)
            {
                break;
            }

            list = list[(space + 1)..];
        }

        return false;
    }

    /// <summary>"CAPABILITY a b c" (a response code) gives "a b c".</summary>
    public static ReadOnlySpan<byte> FromCode(ReadOnlySpan<byte> code) => AfterKeyword(code);

    /// <summary>"CAPABILITY a b c" (untagged data) gives "a b c".</summary>
    public static ReadOnlySpan<byte> FromData(ReadOnlySpan<byte> data) => AfterKeyword(data);

    private static ReadOnlySpan<byte> AfterKeyword(ReadOnlySpan<byte> span)
    {
        const int KeywordLength = 10; // "CAPABILITY"
        if (span.Length > KeywordLength && span[KeywordLength] == ImapBytes.Space &&
            Ascii.EqualsIgnoreCase(span[..KeywordLength], "CAPABILITY"u8))
        {
            return span[(KeywordLength + 1)..];
        }

        return default;
    }
}
