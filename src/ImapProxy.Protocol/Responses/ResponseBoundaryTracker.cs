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

    // Held in the object itself, not in arrays of their own: a spliced session keeps its tracker for its whole life.
    private TailBuffer _tail;
    private long _literalRemaining;
    private int _tailLength;
    private int _byeMatched; // how much of the first line matches "* BYE " so far; -1 once it cannot
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
            var line = ((Span<byte>)_tail)[.._tailLength];
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
                _byeMatched = 0;
            }
        }
    }

    /// <summary>Matches the first bytes of a response's first line against "* BYE ".</summary>
    private void RememberHead(ReadOnlySpan<byte> bytes)
    {
        var bye = "* BYE "u8;
        if (_byeMatched < 0 || _byeMatched == bye.Length)
        {
            return;
        }

        var take = Math.Min(bytes.Length, bye.Length - _byeMatched);
        if (!bytes[..take].SequenceEqual(bye.Slice(_byeMatched, take)))
        {
            _byeMatched = -1;
            return;
        }

        _byeMatched += take;
        if (_byeMatched == bye.Length)
        {
            SawBye = true;
        }
    }

    private void Remember(ReadOnlySpan<byte> bytes)
    {
        Span<byte> tail = _tail;
        if (bytes.Length >= MaxMarker)
        {
            bytes[^MaxMarker..].CopyTo(tail);
            _tailLength = MaxMarker;
            return;
        }

        var keep = Math.Min(_tailLength, MaxMarker - bytes.Length);
        tail.Slice(_tailLength - keep, keep).CopyTo(tail);
        bytes.CopyTo(tail[keep..]);
        _tailLength = keep + bytes.Length;
    }

    [System.Runtime.CompilerServices.InlineArray(MaxMarker)]
    private struct TailBuffer
    {
        private byte _first;
    }
}
