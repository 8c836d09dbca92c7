namespace ImapProxy.Protocol.Parsing;

public enum ParseStatus
{
    /// <summary>Nothing complete yet; everything seen so far is kept in the parser or left unconsumed.</summary>
    NeedMoreData,

    /// <summary>A whole command was parsed.</summary>
    Command,

    /// <summary>A synchronising literal was announced: send a continuation request, then feed more input.</summary>
    ContinuationRequired,

    /// <summary>The command was rejected; answer with the error. Its bytes have been consumed.</summary>
    Error,
}

public enum ParseErrorKind
{
    Syntax,
    LineTooLong,
    LiteralTooLarge,
    CommandTooLarge,
    /// <summary>A well-formed command that is not available before authentication.</summary>
    NotAvailable,
}

/// <summary>Why a command was rejected. <see cref="Fatal"/> errors leave the stream unsynchronised: close.</summary>
public readonly record struct ParseError(ParseErrorKind Kind, byte[]? Tag, string Message, bool Fatal)
{
    /// <summary>The IMAP response code that goes with the error, if any (RFC 5530 / RFC 7888).</summary>
    public string? ResponseCode => Kind switch
    {
        ParseErrorKind.LineTooLong or ParseErrorKind.LiteralTooLarge or ParseErrorKind.CommandTooLarge => "TOOBIG",
        ParseErrorKind.Syntax => "CLIENTBUG",
        _ => null,
    };
}
