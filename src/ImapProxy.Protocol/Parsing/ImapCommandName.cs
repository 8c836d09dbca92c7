using System.Text;

namespace ImapProxy.Protocol.Parsing;

/// <summary>The commands the pre-authentication dialogue knows by name.</summary>
public enum ImapCommandName
{
    /// <summary>Any command that is not answered before authentication.</summary>
    Other,
    Capability,
    Noop,
    Logout,
    Id,
    StartTls,
    Login,
    Authenticate,
}

internal static class ImapCommandNames
{
    public static ImapCommandName Parse(ReadOnlySpan<byte> atom)
    {
        // Case-insensitive match over the fixed vocabulary, without allocating a string.
        return atom.Length switch
        {
            2 when Ascii.EqualsIgnoreCase(atom, "ID"u8) => ImapCommandName.Id,
            4 when Ascii.EqualsIgnoreCase(atom, "NOOP"u8) => ImapCommandName.Noop,
            5 when Ascii.EqualsIgnoreCase(atom, "LOGIN"u8) => ImapCommandName.Login,
            6 when Ascii.EqualsIgnoreCase(atom, "LOGOUT"u8) => ImapCommandName.Logout,
            8 when Ascii.EqualsIgnoreCase(atom, "STARTTLS"u8) => ImapCommandName.StartTls,
            10 when Ascii.EqualsIgnoreCase(atom, "CAPABILITY"u8) => ImapCommandName.Capability,
            12 when Ascii.EqualsIgnoreCase(atom, "AUTHENTICATE"u8) => ImapCommandName.Authenticate,
            _ => ImapCommandName.Other,
        };
    }
}
