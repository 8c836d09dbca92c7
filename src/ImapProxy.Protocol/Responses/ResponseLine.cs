namespace ImapProxy.Protocol.Responses;

public enum ResponseKind
{
    /// <summary>"* ..." : a status (OK/NO/BAD/BYE/PREAUTH) or data (CAPABILITY, ID, ...).</summary>
    Untagged,
    Tagged,
    /// <summary>"+ ...".</summary>
    Continuation,
}

/// <summary>One response line from a backend (CRLF removed), split into its parts without copying.</summary>
public readonly ref struct ResponseLine
{
    public ResponseKind Kind { get; init; }

    public ReadOnlySpan<byte> Tag { get; init; }

    /// <summary>Set for status responses; null for untagged data and continuations.</summary>
    public ImapStatus? Status { get; init; }

    /// <summary>The text inside "[...]" after the status, without the brackets; empty if none.</summary>
    public ReadOnlySpan<byte> Code { get; init; }

    /// <summary>Human-readable text after the status and code (or after "+ ").</summary>
    public ReadOnlySpan<byte> Text { get; init; }

    /// <summary>For untagged data: everything after "* " (e.g. "CAPABILITY IMAP4rev1 ...").</summary>
    public ReadOnlySpan<byte> Data { get; init; }

    /// <summary>The capability list carried by a "[CAPABILITY ...]" code, or empty.</summary>
    public ReadOnlySpan<byte> CodeCapabilities => CapabilityList.FromCode(Code);

    /// <summary>The capability list of an untagged "* CAPABILITY ..." line, or empty.</summary>
    public ReadOnlySpan<byte> DataCapabilities => CapabilityList.FromData(Data);

    public static bool TryParse(ReadOnlySpan<byte> line, out ResponseLine response)
    {
        response = default;
        if (line.IsEmpty)
        {
            return false;
        }

        if (line[0] == ImapBytes.Plus)
        {
            response = new ResponseLine { Kind = ResponseKind.Continuation, Text = line.Length > 1 ? line[(line[1] == ImapBytes.Space ? 2 : 1)..] : default };
            return true;
        }

        var space = line.IndexOf(ImapBytes.Space);
        if (space <= 0)
        {
            return false;
        }

        var tag = line[..space];
        var rest = line[(space + 1)..];
        var untagged = tag.Length == 1 && tag[0] == ImapBytes.Star;
        var word = rest.IndexOf(ImapBytes.Space) is var w and >= 0 ? rest[..w] : rest;
        var status = ParseStatus(word);
        if (status is null)
        {
            if (!untagged)
            {
                return false;
            }

            response = new ResponseLine { Kind = ResponseKind.Untagged, Tag = tag, Data = rest };
            return true;
        }

        var afterStatus = word.Length < rest.Length ? rest[(word.Length + 1)..] : default;
        ReadOnlySpan<byte> code = default;
        if (!afterStatus.IsEmpty && afterStatus[0] == ImapBytes.OpenBracket)
        {
            var close = afterStatus.IndexOf(ImapBytes.CloseBracket);
            if (close < 0)
            {
                return false;
            }

            code = afterStatus[1..close];
            afterStatus = afterStatus[(close + 1)..];
            if (!afterStatus.IsEmpty && afterStatus[0] == ImapBytes.Space)
            {
                afterStatus = afterStatus[1..];
            }
        }

        response = new ResponseLine
        {
            Kind = untagged ? ResponseKind.Untagged : ResponseKind.Tagged,
            Tag = tag,
            Status = status,
            Code = code,
            Text = afterStatus,
            Data = rest,
        };
        return true;
    }

    /// <summary>The response code's atom (e.g. "AUTHENTICATIONFAILED"), without its arguments.</summary>
    public ReadOnlySpan<byte> CodeName => Code.IndexOf(ImapBytes.Space) is var s and >= 0 ? Code[..s] : Code;

    private static ImapStatus? ParseStatus(ReadOnlySpan<byte> word) => word.Length switch
    {
        2 when System.Text.Ascii.EqualsIgnoreCase(word, "OK"u8) => ImapStatus.Ok,
        2 when System.Text.Ascii.EqualsIgnoreCase(word, "NO"u8) => ImapStatus.No,
        3 when System.Text.Ascii.EqualsIgnoreCase(word, "BAD"u8) => ImapStatus.Bad,
        3 when System.Text.Ascii.EqualsIgnoreCase(word, "BYE"u8) => ImapStatus.Bye,
        7 when System.Text.Ascii.EqualsIgnoreCase(word, "PREAUTH"u8) => ImapStatus.PreAuth,
        _ => null,
    };
}
