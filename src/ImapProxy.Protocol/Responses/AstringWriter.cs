using System.Buffers;
using System.Buffers.Text;

namespace ImapProxy.Protocol.Responses;

public enum AstringForm
{
    Quoted,
    Literal,
}

/// <summary>
/// Encodes client-supplied bytes (user names, passwords) as one IMAP string argument for a backend command.
/// Quoting is used only when every byte is a 7-bit TEXT-CHAR; anything else (CR, LF, 8-bit) becomes a literal,
/// so no byte of a credential can ever end the command or start another one.
/// </summary>
public static class AstringWriter
{
    private const int MaxQuotedLength = 1024;

    public static AstringForm ChooseForm(ReadOnlySpan<byte> value)
    {
        if (value.Length > MaxQuotedLength)
        {
            return AstringForm.Literal;
        }

        foreach (var b in value)
        {
            // QUOTED-CHAR = <any TEXT-CHAR except quoted-specials> / "\" quoted-specials (RFC 3501 §9).
            if (b == ImapBytes.Nul || b == ImapBytes.Cr || b == ImapBytes.Lf || b > 0x7F)
            {
                return AstringForm.Literal;
            }
        }

        return AstringForm.Quoted;
    }

    public static void WriteQuoted(IBufferWriter<byte> output, ReadOnlySpan<byte> value)
    {
        ArgumentNullException.ThrowIfNull(output);
        var span = output.GetSpan((value.Length * 2) + 2);
        var w = 0;
        span[w++] = ImapBytes.Quote;
        foreach (var b in value)
        {
            if (b == ImapBytes.Quote || b == ImapBytes.Backslash)
            {
                span[w++] = ImapBytes.Backslash;
            }

            span[w++] = b;
        }

        span[w++] = ImapBytes.Quote;
        output.Advance(w);
    }

    /// <summary>Writes "{n}\r\n" or "{n+}\r\n" (the octets follow separately).</summary>
    public static void WriteLiteralHeader(IBufferWriter<byte> output, int length, bool nonSynchronising)
    {
        ArgumentNullException.ThrowIfNull(output);
        var span = output.GetSpan(16);
        span[0] = ImapBytes.OpenBrace;
        Utf8Formatter.TryFormat(length, span[1..], out var digits);
        var w = 1 + digits;
        if (nonSynchronising)
        {
            span[w++] = ImapBytes.Plus;
        }

        span[w++] = ImapBytes.CloseBrace;
        span[w++] = ImapBytes.Cr;
        span[w++] = ImapBytes.Lf;
        output.Advance(w);
    }
}
