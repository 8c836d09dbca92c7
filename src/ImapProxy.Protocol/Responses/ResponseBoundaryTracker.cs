namespace ImapProxy.Protocol.Responses;

/// <summary>
/// Follows a server's response stream just enough to know whether it stands between two response lines: it
/// finds line ends and skips the octets of literals ("{n}" at a line end). Only then may the proxy insert a
/// line of its own ("* BYE") without corrupting a response in flight. Literal bodies are skipped, not scanned,
/// so a large FETCH costs almost nothing.
/// </summary>
public sealed class ResponseBoundaryTracker
{
    // The digits of a literal marker seen at the end of the current line so far (enough for any real size).
    private const int MaxMarker = 24;

    private long _literalRemaining;
    private readonly byte[] _tail = new byte[MaxMarker];
    private int _tailLength;
    private bool _atLineStart = true;

    /// <summary>True when everything seen so far ends with a complete response line.</summary>
    public bool AtLineStart => _atLineStart && _literalRemaining == 0;

    public void Advance(ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            if (_literalRemaining > 0)
            {
                var skip = (int)Math.Min(_literalRemaining, data.Length);
                _literalRemaining -= skip;
                data = data[skip..];
                // A literal never ends a line: its response continues after it.
                _atLineStart = false;
                continue;
            }

            var lf = data.IndexOf(ImapBytes.Lf);
            if (lf < 0)
            {
                Remember(data);
                _atLineStart = false;
                return;
            }

            Remember(data[..lf]);
            data = data[(lf + 1)..];
            var line = _tail.AsSpan(0, _tailLength);
            if (!line.IsEmpty && line[^1] == ImapBytes.Cr)
            {
                line = line[..^1];
            }

            if (Parsing.ImapCommandParser.TryGetTrailingLiteral(line, out var length, out _))
            {
                _literalRemaining = length;
                _atLineStart = false;
            }
            else
            {
                _atLineStart = true;
            }

            _tailLength = 0;
        }
    }

    private void Remember(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length >= MaxMarker)
        {
            bytes[^MaxMarker..].CopyTo(_tail);
            _tailLength = MaxMarker;
            return;
        }

        var keep = Math.Min(_tailLength, MaxMarker - bytes.Length);
        _tail.AsSpan(_tailLength - keep, keep).CopyTo(_tail);
        bytes.CopyTo(_tail.AsSpan(keep));
        _tailLength = keep + bytes.Length;
    }
}
