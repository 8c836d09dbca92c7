using ImapProxy.Connections.Transport;
using ImapProxy.Protocol.Parsing;

namespace ImapProxy.Backends;

/// <summary>
/// Splits what a backend sends during the hand-over into response lines, whoever does the reading (an asynchronous
/// loop, or an engine thread's readiness events): bytes go in through <see cref="GetReceiveSpace"/> and
/// <see cref="Received"/>, lines come out of <see cref="TryTakeLine"/>. One pooled buffer, rented on first use and
/// returned by <see cref="Dispose"/>; nothing is allocated per line.
/// </summary>
/// <remarks>
/// A line that announces a literal at its end (an untagged ID answer, say) is returned at once; the literal and the
/// lines that continue the same response are then read past before the next line is returned. Nothing the hand-over
/// needs travels in literals.
/// </remarks>
internal sealed class BackendLineReader(int maxLine) : IDisposable
{
    private readonly ReceiveBuffer _received = new();
    private long _literalLeft; // bytes of a literal still to read past
    private bool _continuing; // the next line continues a response already returned (after a literal)

    /// <summary>Bytes received and not consumed: what the backend sent past the last line taken.</summary>
    public ReadOnlySpan<byte> Pending => _received.Bytes;

    /// <summary>
    /// Room for the next receive: at least a kilobyte, more while a line is longer than the buffer (up to the line
    /// limit, past which <see cref="TryTakeLine"/> has failed already).
    /// </summary>
    public Memory<byte> GetReceiveSpace() => _received.GetRoom();

    /// <summary><paramref name="count"/> bytes were received into the last <see cref="GetReceiveSpace"/>.</summary>
    public void Received(int count) => _received.Received(count);

    /// <summary>
    /// The next whole response line, without its CRLF, consumed; valid until the buffer is next used. False when more
    /// bytes are needed. Throws <see cref="BackendProtocolException"/> on a line or literal beyond the limit.
    /// </summary>
    public bool TryTakeLine(out ReadOnlySpan<byte> line)
    {
        while (true)
        {
            if (_literalLeft > 0)
            {
                var skipped = (int)Math.Min(_literalLeft, _received.Bytes.Length);
                _received.Consume(skipped);
                _literalLeft -= skipped;
                if (_literalLeft > 0)
                {
                    line = default;
                    return false;
                }
            }

            var available = _received.Bytes;
            var lf = available.IndexOf((byte)'\n');
            if (lf < 0)
            {
                if (available.Length > maxLine)
                {
                    throw new BackendProtocolException("backend response line too long");
                }

                line = default;
                return false;
            }

            // Consuming leaves the bytes where they are (the array changes only on the next receive).
            var raw = available[..lf];
            _received.Consume(lf + 1);
            if (raw.Length > 0 && raw[^1] == (byte)'\r')
            {
                raw = raw[..^1];
            }

            var continuing = _continuing;
            _continuing = ImapCommandParser.TryGetTrailingLiteral(raw, out var literal, out _);
            if (_continuing)
            {
                if (literal > maxLine)
                {
                    throw new BackendProtocolException("backend literal too large");
                }

                _literalLeft = literal;
            }

            if (!continuing)
            {
                line = raw;
                return true;
            }
        }
    }

    /// <summary>Returns the buffer (the reader may be used again; it rents anew).</summary>
    public void Dispose() => _received.Release(clear: false);
}

/// <summary>A backend broke the protocol during the hand-over; the message is for logs (never backend text).</summary>
internal sealed class BackendProtocolException(string detail) : Exception(detail);
