namespace ImapProxy.Protocol;

/// <summary>Named bytes of the IMAP grammar (RFC 3501 §9, RFC 9051 §9).</summary>
internal static class ImapBytes
{
    public const byte Cr = (byte)'\r';
    public const byte Lf = (byte)'\n';
    public const byte Space = (byte)' ';
    public const byte Quote = (byte)'"';
    public const byte Backslash = (byte)'\\';
    public const byte OpenParen = (byte)'(';
    public const byte CloseParen = (byte)')';
    public const byte OpenBrace = (byte)'{';
    public const byte CloseBrace = (byte)'}';
    public const byte OpenBracket = (byte)'[';
    public const byte CloseBracket = (byte)']';
    public const byte Plus = (byte)'+';
    public const byte Star = (byte)'*';
    public const byte Percent = (byte)'%';
    public const byte Nul = 0;
    public const byte Del = 0x7F;

    public static ReadOnlySpan<byte> CrLf => "\r\n"u8;

    /// <summary>ATOM-CHAR: any CHAR except atom-specials. Bytes over 0x7F are accepted (lenient, harmless pre-auth).</summary>
    public static bool IsAtomChar(byte b) =>
        b > 0x20 && b != Del && b != OpenParen && b != CloseParen && b != OpenBrace && b != Quote &&
        b != Backslash && b != Percent && b != Star && b != CloseBracket;

    /// <summary>ASTRING-CHAR: ATOM-CHAR or resp-specials (']').</summary>
    public static bool IsAstringChar(byte b) => IsAtomChar(b) || b == CloseBracket;

    /// <summary>tag: 1*&lt;any ASTRING-CHAR except "+"&gt;.</summary>
    public static bool IsTagChar(byte b) => IsAstringChar(b) && b != Plus;

    public static bool IsDigit(byte b) => (uint)(b - '0') <= 9;
}
