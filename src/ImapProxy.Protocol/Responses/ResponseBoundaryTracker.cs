namespace ImapProxy.Protocol.Responses;

/// <summary>
/// Follows a server's response stream just enough to know whether it stands between two response lines: it
/// finds line ends and skips the octets of literals ("{n}" at a line end). Only then may the proxy insert a
/// line of its own ("* BYE") without corrupting a response in flight. Literal bodies are skipped, not scanned,
/// so a large FETCH costs almost nothing. It also notes whether the server said "* BYE" (it meant to close).
/// </summary>
public sealed class ResponseBoundaryTracker
{
    // The end of the current line is kept to find a literal marker ("{n}" or "{n+}"); enough for any real size.
    private const int MaxMarker = 24;

    private readonly byte[] _tail = new byte[MaxMarker];
    private readonly byte[] _head = new byte[6];
    private long _literalRemaining;
    private int _tailLength;
    private int _headLength;
    private bool _atLineStart = true;
    private bool _inFirstLine = true;

    /// <summary>True when everything seen so far ends with a complete response line.</summary>
    public bool AtLineStart => _atLineStart && _literalRemaining == 0;

    /// <summary>The server said "* BYE": it meant to close (logout, shutdown), it did not just die.</summary>
    public bool SawBye { get; private set; }

    public void Advance(ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            if (_literalRemaining > 0)
            {
                var skip = (int)Math.Min(_literalRemaining, data.Length);
                _literalRemaining -= skip;
                data = data[skip..];
                continue;
            }

            var lf = data.IndexOf(ImapBytes.Lf);
            var part = lf < 0 ? data : data[..lf];
            if (_inFirstLine)
            {
                RememberHead(part);
            }

            Remember(part);
            if (lf < 0)
            {
                _atLineStart = false;
                return;
            }

            data = data[(lf + 1)..];
            var line = _tail.AsSpan(0, _tailLength);
            if (!line.IsEmpty && line[^1] == ImapBytes.Cr)
            {
                line = line[..^1];
            }

            _tailLength = 0;
            if (Parsing.ImapCommandParser.TryGetTrailingLiteral(line, out var length, out _))
            {
                // The response goes on after the literal: not a boundary, not a new response.
                _literalRemaining = length;
                _atLineStart = false;
                _inFirstLine = false;
            }
            else
            {
                _atLineStart = true;
                _inFirstLine = true;
                _headLength = 0;
            }
        }
    }

    /// <summary>Collects the first bytes of a response's first line to spot "* BYE ".</summary>
    private void RememberHead(ReadOnlySpan<byte> bytes)
    {
        if (_headLength == _head.Length)
        {
            return;
        }

        var take = Math.Min(bytes.Length, _head.Length - _headLength);
        bytes[..take].CopyTo(_head.AsSpan(_headLength));
        _headLength += take;
        if (_headLength == _head.Length && _head.AsSpan().SequenceEqual("* BYE "u8))
        {
            SawBye = true;
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
