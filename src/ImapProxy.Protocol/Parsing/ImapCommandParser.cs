using System.Buffers;
using System.Buffers.Text;

namespace ImapProxy.Protocol.Parsing;

/// <summary>Size limits of the pre-authentication parser.</summary>
/// <param name="MaxLineLength">Longest line, CRLF excluded. Lines carrying SASL-IR tokens may be several KB.</param>
/// <param name="MaxLiteralSize">Largest literal accepted before authentication.</param>
/// <param name="MaxCommandSize">Largest command, all its lines and literals together.</param>
public sealed record ImapParserLimits(int MaxLineLength = 16 * 1024, int MaxLiteralSize = 4 * 1024, int MaxCommandSize = 64 * 1024)
{
    /// <summary>Arguments (and list members) in one command; ID has at most 30 pairs (RFC 2971).</summary>
    public const int MaxArguments = 128;

    /// <summary>Parenthesised lists nest no deeper than this before authentication.</summary>
    public const int MaxListDepth = 4;
}

/// <summary>
/// Resumable parser of pre-authentication IMAP commands over a <see cref="ReadOnlySequence{T}"/>.
/// Lines are parsed only once complete (a partial line is left unconsumed), literals are accumulated across
/// reads, and a command that is rejected is consumed to its end (including non-synchronising literals) so the
/// stream stays in step with the client. Correct for any split of the input.
/// </summary>
public sealed class ImapCommandParser
{
    private const int DiscardTailLength = 24;

    private readonly ImapParserLimits _limits;

    private State _state = State.Line;
    private bool _firstLine = true;
    private byte[] _tag = [];
    private ImapCommandName _name;
    private List<ImapArgument> _arguments = [];
    private readonly List<ImapArgument> _openLists = [];
    private bool _afterArgument;
    private int _argumentCount;
    private int _commandBytes;
    private ParseError? _rejection;

    private byte[]? _literal;
    private int _literalFilled;
    private long _literalRemaining;

    // A line that is too long is skipped; its last bytes tell whether it announced a literal.
    private readonly byte[] _discardTail = new byte[DiscardTailLength];
    private int _discardTailLength;
    private bool _discardingSaslLine;

    public ImapCommandParser(ImapParserLimits limits)
    {
        ArgumentNullException.ThrowIfNull(limits);
        _limits = limits;
    }

    private enum State
    {
        Line,
        Literal,
        DiscardLine,
    }

    /// <summary>The command whose synchronising literal is awaited (after <see cref="ParseStatus.ContinuationRequired"/>).</summary>
    public ImapCommandName PendingCommand => _name;

    /// <summary>The tag of the command in progress.</summary>
    public byte[] PendingTag => _tag;

    /// <summary>True when no command is partially received (the next byte starts a new command).</summary>
    public bool IsAtCommandStart => _state == State.Line && _firstLine;

    /// <summary>
    /// Consumes input until a command is complete, a continuation is required, an error is to be reported or the
    /// input runs out. The reader is advanced past everything the parser has taken.
    /// </summary>
    public ParseStatus TryParse(ref SequenceReader<byte> reader, out ImapCommand? command, out ParseError error)
    {
        command = null;
        error = default;
        while (true)
        {
            switch (_state)
            {
                case State.DiscardLine:
                    if (!TryDiscardLine(ref reader))
                    {
                        return ParseStatus.NeedMoreData;
                    }

                    if (_discardingSaslLine)
                    {
                        _discardingSaslLine = false;
                        _state = State.Line;
                        continue;
                    }

                    // The discarded line may have announced a literal; the rejection is already pending.
                    var discardedTail = _discardTail.AsSpan(0, _discardTailLength);
                    if (discardedTail.EndsWith("}"u8) && !TryGetTrailingLiteral(discardedTail, out _, out _))
                    {
                        // A marker longer than the remembered tail: its size is unknowable, so is the stream.
                        error = _rejection!.Value with { Fatal = true };
                        ResetCommand();
                        _state = State.Line;
                        return ParseStatus.Error;
                    }

                    if (EndFragment(TryGetTrailingLiteral(discardedTail, out var n, out var sync) ? (n, sync) : null, out error) is { } afterDiscard)
                    {
                        return afterDiscard;
                    }

                    continue;

                case State.Literal:
                    if (!TryReadLiteral(ref reader))
                    {
                        return ParseStatus.NeedMoreData;
                    }

                    continue;

                default:
                    if (ParseLine(ref reader, out command, out error) is { } status)
                    {
                        return status;
                    }

                    continue;
            }
        }
    }

    /// <summary>
    /// Reads one raw line (an AUTHENTICATE continuation response). Returns <see cref="ParseStatus.Command"/> with
    /// the line's bytes (CRLF removed), <see cref="ParseStatus.NeedMoreData"/>, or <see cref="ParseStatus.Error"/>
    /// when the line is longer than the limit (the rest of it is then skipped by the next calls).
    /// </summary>
    public ParseStatus TryReadLine(ref SequenceReader<byte> reader, out ReadOnlySequence<byte> line)
    {
        line = default;
        if (_state == State.DiscardLine)
        {
            if (!TryDiscardLine(ref reader))
            {
                return ParseStatus.NeedMoreData;
            }

            _discardingSaslLine = false;
            _state = State.Line;
        }

        switch (FindLine(ref reader, out line))
        {
            case LineResult.Found:
                return ParseStatus.Command;
            case LineResult.TooLong:
                _discardingSaslLine = true;
                BeginDiscard(ref reader);
                return ParseStatus.Error;
            default:
                return ParseStatus.NeedMoreData;
        }
    }

    /// <summary>Forgets any partial command (after STARTTLS, for instance).</summary>
    public void Reset()
    {
        ResetCommand();
        _state = State.Line;
        _discardingSaslLine = false;
    }

    private ParseStatus? ParseLine(ref SequenceReader<byte> reader, out ImapCommand? command, out ParseError error)
    {
        command = null;
        error = default;

        var found = FindLine(ref reader, out var line);
        if (found == LineResult.NeedMore)
        {
            return ParseStatus.NeedMoreData;
        }

        if (found == LineResult.TooLong)
        {
            if (_firstLine)
            {
                _tag = ReadTagPrefix(reader.UnreadSequence);
                _firstLine = false;
            }

            _rejection ??= Reject(ParseErrorKind.LineTooLong, "Line too long.");
            BeginDiscard(ref reader);
            return null;
        }

        if (_firstLine && line.Length == 0)
        {
            // An empty line between commands is harmless; some clients send a stray CRLF.
            return null;
        }

        _commandBytes += (int)line.Length + 2;
        if (_rejection is null && _commandBytes > _limits.MaxCommandSize)
        {
            _rejection = Reject(ParseErrorKind.CommandTooLarge, "Command too large.");
        }

        byte[]? rented = null;
        try
        {
            ReadOnlySpan<byte> span;
            if (line.IsSingleSegment)
            {
                span = line.FirstSpan;
            }
            else
            {
                // Only a line that crosses segments is copied.
                rented = ArrayPool<byte>.Shared.Rent((int)line.Length);
                line.CopyTo(rented);
                span = rented.AsSpan(0, (int)line.Length);
            }

            var first = _firstLine;
            _firstLine = false;
            var literal = _rejection is null ? Tokenize(span, first) : null;
            if (_rejection is not null)
            {
                // Rejected (now or earlier): only the literal the raw line announces still matters.
                literal = TryGetTrailingLiteral(span, out var n, out var sync) ? (n, sync) : null;
                return EndFragment(literal, out error);
            }

            if (literal is { } announced)
            {
                return BeginLiteral(announced.Length, announced.Sync, out error);
            }

            if (_openLists.Count != 0)
            {
                _rejection = Reject(ParseErrorKind.Syntax, "Unbalanced parenthesis.");
                return EndFragment(null, out error);
            }

            command = new ImapCommand(_tag, _name, _arguments);
            ResetCommand();
            return ParseStatus.Command;
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented, clearArray: true);
            }
        }
    }

    /// <summary>
    /// Tokenizes one line of a command (the first, or one that follows a literal). Returns the literal the line
    /// announces at its end, if any. Sets <see cref="_rejection"/> on a syntax error or an unknown command.
    /// </summary>
    private (long Length, bool Sync)? Tokenize(ReadOnlySpan<byte> span, bool first)
    {
        var pos = 0;
        if (first)
        {
            while (pos < span.Length && ImapBytes.IsTagChar(span[pos]))
            {
                pos++;
            }

            if (pos > 0 && pos < 64)
            {
                _tag = span[..pos].ToArray();
            }

            // A tag too long to keep is no tag: a command must never be answered with an empty one.
            if (_tag.Length == 0 || pos == span.Length || span[pos] != ImapBytes.Space)
            {
                _rejection = Reject(ParseErrorKind.Syntax, _tag.Length == 0 ? "Invalid tag." : "Missing command.");
                return null;
            }

            pos++;
            var nameStart = pos;
            while (pos < span.Length && ImapBytes.IsAtomChar(span[pos]))
            {
                pos++;
            }

            _name = ImapCommandNames.Parse(span[nameStart..pos]);
            if (pos == nameStart)
            {
                _rejection = Reject(ParseErrorKind.Syntax, "Missing command.");
                return null;
            }

            if (_name == ImapCommandName.Other)
            {
                _rejection = Reject(ParseErrorKind.NotAvailable, "Command not available before authentication.");
                return null;
            }

            _afterArgument = true;
        }

        while (pos < span.Length)
        {
            var b = span[pos];
            if (_afterArgument)
            {
                if (b == ImapBytes.Space)
                {
                    _afterArgument = false;
                    pos++;
                    if (pos == span.Length)
                    {
                        _rejection = Reject(ParseErrorKind.Syntax, "Unexpected end of line.");
                        return null;
                    }

                    continue;
                }

                if (b == ImapBytes.CloseParen && _openLists.Count > 0)
                {
                    CloseList();
                    pos++;
                    continue;
                }

                _rejection = Reject(ParseErrorKind.Syntax, "Expected a space between arguments.");
                return null;
            }

            switch (b)
            {
                case ImapBytes.OpenParen:
                    if (_openLists.Count >= ImapParserLimits.MaxListDepth || !AddArgument(ImapArgument.NewList(), out var list))
                    {
                        _rejection ??= Reject(ParseErrorKind.Syntax, "Lists nested too deeply.");
                        return null;
                    }

                    _openLists.Add(list);
                    pos++;
                    continue;

                case ImapBytes.CloseParen when _openLists.Count > 0 && _openLists[^1].Items.Count == 0:
                    CloseList();
                    pos++;
                    continue;

                case ImapBytes.Quote:
                    if (!TryParseQuoted(span, ref pos, out var quoted) || !AddArgument(ImapArgument.Text(quoted), out _))
                    {
                        _rejection ??= Reject(ParseErrorKind.Syntax, "Invalid quoted string.");
                        return null;
                    }

                    _afterArgument = true;
                    continue;

                case ImapBytes.OpenBrace:
                    if (!TryParseLiteralMarker(span[pos..], out var length, out var sync))
                    {
                        _rejection = Reject(ParseErrorKind.Syntax, "Invalid literal.");
                        return null;
                    }

                    return (length, sync);

                default:
                    var start = pos;
                    while (pos < span.Length && ImapBytes.IsAstringChar(span[pos]))
                    {
                        pos++;
                    }

                    if (pos == start)
                    {
                        _rejection = Reject(ParseErrorKind.Syntax, "Invalid character in argument.");
                        return null;
                    }

                    var atom = span[start..pos];
                    var argument = atom.Length == 3 && System.Text.Ascii.EqualsIgnoreCase(atom, "NIL"u8)
                        ? ImapArgument.Nil
                        : ImapArgument.Atom(atom.ToArray());
                    if (!AddArgument(argument, out _))
                    {
                        return null;
                    }

                    _afterArgument = true;
                    continue;
            }
        }

        return null;
    }

    private bool AddArgument(ImapArgument argument, out ImapArgument added)
    {
        added = argument;
        if (++_argumentCount > ImapParserLimits.MaxArguments)
        {
            _rejection ??= Reject(ParseErrorKind.CommandTooLarge, "Too many arguments.");
            return false;
        }

        if (_openLists.Count > 0)
        {
            _openLists[^1].MutableItems.Add(argument);
        }
        else
        {
            _arguments.Add(argument);
        }

        return true;
    }

    private void CloseList()
    {
        _openLists.RemoveAt(_openLists.Count - 1);
        _afterArgument = true;
    }

    private static bool TryParseQuoted(ReadOnlySpan<byte> span, ref int pos, out byte[] value)
    {
        // quoted = DQUOTE *QUOTED-CHAR DQUOTE; only \" and \\ may be escaped. 8-bit bytes are accepted
        // (IMAP4rev2 allows UTF-8; clients send it anyway); NUL, CR and LF never are.
        value = [];
        var i = pos + 1;
        var escapes = 0;
        while (i < span.Length)
        {
            var b = span[i];
            if (b == ImapBytes.Quote)
            {
                break;
            }

            if (b == ImapBytes.Backslash)
            {
                if (i + 1 >= span.Length || (span[i + 1] != ImapBytes.Quote && span[i + 1] != ImapBytes.Backslash))
                {
                    return false;
                }

                escapes++;
                i += 2;
                continue;
            }

            if (b == ImapBytes.Nul || b == ImapBytes.Cr || b == ImapBytes.Lf)
            {
                return false;
            }

            i++;
        }

        if (i >= span.Length)
        {
            return false;
        }

        var raw = span[(pos + 1)..i];
        value = new byte[raw.Length - escapes];
        var w = 0;
        for (var r = 0; r < raw.Length; r++)
        {
            if (raw[r] == ImapBytes.Backslash)
            {
                r++;
            }

            value[w++] = raw[r];
        }

        pos = i + 1;
        return true;
    }

    /// <summary>Parses "{n}" or "{n+}" that must end the span.</summary>
    internal static bool TryParseLiteralMarker(ReadOnlySpan<byte> span, out long length, out bool sync)
    {
        length = 0;
        sync = true;
        if (span.Length < 3 || span[0] != ImapBytes.OpenBrace || span[^1] != ImapBytes.CloseBrace)
        {
            return false;
        }

        var digits = span[1..^1];
        if (digits.Length > 0 && digits[^1] == ImapBytes.Plus)
        {
            sync = false;
            digits = digits[..^1];
        }

        if (digits.Length == 0)
        {
            return false;
        }

        foreach (var d in digits)
        {
            if (!ImapBytes.IsDigit(d))
            {
                return false;
            }
        }

        // Any number too long to matter is simply "too large": saturate instead of overflowing.
        if (digits.Length > 18 || !Utf8Parser.TryParse(digits, out length, out var consumed) || consumed != digits.Length)
        {
            length = long.MaxValue;
        }

        return true;
    }

    /// <summary>Finds a literal marker ("{n}" or "{n+}") at the end of raw line bytes.</summary>
    public static bool TryGetTrailingLiteral(ReadOnlySpan<byte> line, out long length, out bool sync)
    {
        length = 0;
        sync = true;
        var open = line.LastIndexOf(ImapBytes.OpenBrace);
        return open >= 0 && TryParseLiteralMarker(line[open..], out length, out sync);
    }

    private ParseStatus? BeginLiteral(long length, bool sync, out ParseError error)
    {
        error = default;
        if (length > _limits.MaxLiteralSize || _commandBytes + length > _limits.MaxCommandSize)
        {
            _rejection = Reject(ParseErrorKind.LiteralTooLarge, "Literal too large.");
            return EndFragment((length, sync), out error);
        }

        _literal = new byte[length];
        _literalFilled = 0;
        _literalRemaining = length;
        _commandBytes += (int)length;
        _state = State.Literal;
        return sync ? ParseStatus.ContinuationRequired : null;
    }

    /// <summary>
    /// A fragment of a rejected command ended. Report now if the command is over or the client waits for a
    /// continuation; skip a non-synchronising literal the client is sending regardless.
    /// </summary>
    private ParseStatus? EndFragment((long Length, bool Sync)? literal, out ParseError error)
    {
        error = default;
        var rejection = _rejection!.Value;
        if (literal is { Sync: false } nonSync)
        {
            if (nonSync.Length > _limits.MaxLiteralSize)
            {
                // RFC 7888 §4: a non-synchronising literal the server will not take leaves no way to resync.
                error = rejection with { Kind = ParseErrorKind.LiteralTooLarge, Message = "Literal too large.", Fatal = true };
                ResetCommand();
                _state = State.Line;
                return ParseStatus.Error;
            }

            _literal = null;
            _literalRemaining = nonSync.Length;
            _state = State.Literal;
            return null;
        }

        // End of the command, or a synchronising literal we decline: the client gets no continuation.
        error = rejection;
        ResetCommand();
        _state = State.Line;
        return ParseStatus.Error;
    }

    private bool TryReadLiteral(ref SequenceReader<byte> reader)
    {
        while (_literalRemaining > 0)
        {
            if (reader.End)
            {
                return false;
            }

            var chunk = reader.UnreadSpan;
            var take = (int)Math.Min(chunk.Length, _literalRemaining);
            if (_literal is not null)
            {
                chunk[..take].CopyTo(_literal.AsSpan(_literalFilled));
                _literalFilled += take;
            }

            reader.Advance(take);
            _literalRemaining -= take;
        }

        if (_literal is not null && _rejection is null)
        {
            AddArgument(ImapArgument.Text(_literal), out _);
            _afterArgument = true;
        }

        _literal = null;
        _state = State.Line;
        return true;
    }

    private enum LineResult
    {
        NeedMore,
        Found,
        TooLong,
    }

    /// <summary>
    /// Looks for LF only within the limit, so an endless line costs no more than one window of scanning.
    /// A bare LF is accepted as a line end; a CR before it is removed.
    /// </summary>
    private LineResult FindLine(ref SequenceReader<byte> reader, out ReadOnlySequence<byte> line)
    {
        line = default;
        var window = reader.UnreadSequence;
        var limit = (long)_limits.MaxLineLength + 2;
        if (window.Length > limit)
        {
            window = window.Slice(0, limit);
        }

        var lf = window.PositionOf(ImapBytes.Lf);
        if (lf is null)
        {
            return window.Length >= limit ? LineResult.TooLong : LineResult.NeedMore;
        }

        line = window.Slice(0, lf.Value);
        if (line.Length > 0 && EndsWithCr(line))
        {
            line = line.Slice(0, line.Length - 1);
        }

        if (line.Length > _limits.MaxLineLength)
        {
            return LineResult.TooLong;
        }

        reader.Advance(window.Slice(0, lf.Value).Length + 1);
        return LineResult.Found;
    }

    private static bool EndsWithCr(in ReadOnlySequence<byte> line)
    {
        var last = line.Slice(line.Length - 1);
        return last.FirstSpan[0] == ImapBytes.Cr;
    }

    private void BeginDiscard(ref SequenceReader<byte> reader)
    {
        _state = State.DiscardLine;
        _discardTailLength = 0;
    }

    /// <summary>Skips to the end of the current line, remembering its last bytes.</summary>
    private bool TryDiscardLine(ref SequenceReader<byte> reader)
    {
        while (!reader.End)
        {
            var span = reader.UnreadSpan;
            var lf = span.IndexOf(ImapBytes.Lf);
            var take = lf >= 0 ? span[..lf] : span;
            RememberTail(take);
            reader.Advance(lf >= 0 ? lf + 1 : span.Length);
            if (lf >= 0)
            {
                if (_discardTailLength > 0 && _discardTail[_discardTailLength - 1] == ImapBytes.Cr)
                {
                    _discardTailLength--;
                }

                return true;
            }
        }

        return false;
    }

    private void RememberTail(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length >= DiscardTailLength)
        {
            bytes[^DiscardTailLength..].CopyTo(_discardTail);
            _discardTailLength = DiscardTailLength;
            return;
        }

        var keep = Math.Min(_discardTailLength, DiscardTailLength - bytes.Length);
        _discardTail.AsSpan(_discardTailLength - keep, keep).CopyTo(_discardTail);
        bytes.CopyTo(_discardTail.AsSpan(keep));
        _discardTailLength = keep + bytes.Length;
    }

    private ParseError Reject(ParseErrorKind kind, string message) =>
        new(kind, _tag.Length > 0 ? _tag : null, message, Fatal: false);

    private static byte[] ReadTagPrefix(in ReadOnlySequence<byte> unread)
    {
        var head = unread.Slice(0, Math.Min(unread.Length, 65)).ToArray();
        var length = 0;
        while (length < head.Length && length < 64 && ImapBytes.IsTagChar(head[length]))
        {
            length++;
        }

        return length > 0 && length < head.Length && head[length] == ImapBytes.Space ? head[..length] : [];
    }

    private void ResetCommand()
    {
        _firstLine = true;
        _tag = [];
        _name = ImapCommandName.Other;
        _arguments = [];
        _openLists.Clear();
        _afterArgument = false;
        _argumentCount = 0;
        _commandBytes = 0;
        _rejection = null;
        _literal = null;
        _literalFilled = 0;
        _literalRemaining = 0;
    }
}
