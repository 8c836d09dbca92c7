using System.Buffers;
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
    private const int MinimumSize = 4096;

    private byte[] _buffer = [];
    private int _start; // first byte not consumed
    private int _end; // end of the bytes received
    private long _literalLeft; // bytes of a literal still to read past
    private bool _continuing; // the next line continues a response already returned (after a literal)

    /// <summary>Bytes received and not consumed: what the backend sent past the last line taken.</summary>
    public ReadOnlySpan<byte> Pending => _buffer.AsSpan(_start, _end - _start);

    /// <summary>
    /// Room for the next receive: at least a few hundred bytes, more while a line is longer than the buffer (up to the
    /// line limit, past which <see cref="TryTakeLine"/> has failed already).
    /// </summary>
    public Memory<byte> GetReceiveSpace()
    {
        if (_start == _end)
        {
            _start = _end = 0;
        }

        if (_buffer.Length - _end < 512)
        {
            var kept = _end - _start;
            if (_start > 0 && _buffer.Length - kept >= 512)
            {
                _buffer.AsSpan(_start, kept).CopyTo(_buffer);
            }
            else
            {
                var grown = ArrayPool<byte>.Shared.Rent(Math.Max(MinimumSize, _buffer.Length * 2));
                _buffer.AsSpan(_start, kept).CopyTo(grown);
                Return();
                _buffer = grown;
            }

            _start = 0;
            _end = kept;
        }

        return _buffer.AsMemory(_end);
    }

    /// <summary><paramref name="count"/> bytes were received into the last <see cref="GetReceiveSpace"/>.</summary>
    public void Received(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, _buffer.Length - _end);
        _end += count;
    }

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
                var skipped = (int)Math.Min(_literalLeft, _end - _start);
                _start += skipped;
                _literalLeft -= skipped;
                if (_literalLeft > 0)
                {
                    line = default;
                    return false;
                }
            }

            var available = _buffer.AsSpan(_start, _end - _start);
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

            var raw = available[..lf];
            _start += lf + 1;
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
    public void Dispose()
    {
        Return();
        _buffer = [];
        _start = _end = 0;
    }

    private void Return()
    {
        if (_buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
        }
    }
}

/// <summary>A backend broke the protocol during the hand-over; the message is for logs (never backend text).</summary>
internal sealed class BackendProtocolException(string detail) : Exception(detail);
