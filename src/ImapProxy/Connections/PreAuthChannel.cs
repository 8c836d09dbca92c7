using System.Buffers;
using ImapProxy.Backends;

namespace ImapProxy.Connections;

/// <summary>
/// The pre-auth dialogue's I/O on the client stream (the socket's, or TLS over it): what the client sent, in one pooled
/// buffer taken only once bytes are there (a waiting dialogue holds none: it waits with a zero-byte read), and the
/// answers, in one pooled buffer written to the stream by <see cref="FlushAsync"/>. Reads and writes go straight to the
/// stream: no pipes and no copy loops between the dialogue and the socket.
/// </summary>
/// <remarks>
/// The input buffer grows only while the dialogue asks for more of a command it has not consumed; the dialogue's own
/// limits on commands bound it. Not thread-safe: one session's dialogue at a time.
/// </remarks>
internal sealed class PreAuthChannel : IDisposable
{
    private const int ReadSize = 4096;

    private readonly Stream _stream;
    private byte[] _input = [];
    private int _start; // first byte not consumed
    private int _end; // end of the bytes received
    private bool _ended;

    /// <summary>A channel on <paramref name="stream"/>; <paramref name="readAhead"/> was received already (read before it).</summary>
    public PreAuthChannel(Stream stream, ReadOnlySpan<byte> readAhead = default)
    {
        _stream = stream;
        if (!readAhead.IsEmpty)
        {
            _input = ArrayPool<byte>.Shared.Rent(Math.Max(ReadSize, readAhead.Length));
            readAhead.CopyTo(_input);
            _end = readAhead.Length;
        }
    }

    /// <summary>The answers to send; <see cref="FlushAsync"/> sends them.</summary>
    public RentedBufferWriter Output { get; } = new();

    /// <summary>What was received and not consumed.</summary>
    public ReadOnlySequence<byte> Buffered => new(_input, _start, _end - _start);

    /// <summary>Whether the client has ended its side (nothing more will arrive).</summary>
    public bool Ended => _ended;

    /// <summary>
    /// Waits for more bytes from the client and appends them to <see cref="Buffered"/>; false once the client has ended
    /// its side. Failures are the stream's.
    /// </summary>
    public async ValueTask<bool> ReadAsync(CancellationToken cancellationToken)
    {
        if (_ended)
        {
            return false;
        }

        if (_start == _end)
        {
            // Nothing kept: the buffer goes back while the client is silent, and is taken again once it speaks.
            Return();
            _start = _end = 0;
            _ = await _stream.ReadAsync(Memory<byte>.Empty, cancellationToken);
        }

        var read = await _stream.ReadAsync(GetReceiveSpace(), cancellationToken);
        if (read == 0)
        {
            _ended = true;
            return false;
        }

        _end += read;
        return true;
    }

    /// <summary><paramref name="count"/> bytes of <see cref="Buffered"/> were consumed.</summary>
    public void Consume(long count)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, _end - _start);
        _start += (int)count;
        if (_start == _end)
        {
            _start = _end = 0;
        }
    }

    /// <summary>Sends what <see cref="Output"/> holds, then clears it.</summary>
    public async ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        if (Output.WrittenCount == 0)
        {
            return;
        }

        await _stream.WriteAsync(Output.WrittenMemory, cancellationToken);
        Output.Clear();
    }

    /// <summary>What was received and not consumed, taken out (the channel keeps nothing of it).</summary>
    public byte[] TakeBuffered()
    {
        var buffered = _input.AsSpan(_start, _end - _start).ToArray();
        _start = _end = 0;
        return buffered;
    }

    /// <summary>Returns both buffers; whatever was not flushed is dropped (the dialogue is over).</summary>
    public void Dispose()
    {
        Return();
        _start = _end = 0;
        Output.Dispose();
    }

    private Memory<byte> GetReceiveSpace()
    {
        if (_input.Length - _end < ReadSize / 4)
        {
            var kept = _end - _start;
            if (_start > 0 && _input.Length - kept >= ReadSize / 4)
            {
                _input.AsSpan(_start, kept).CopyTo(_input);
            }
            else
            {
                var grown = ArrayPool<byte>.Shared.Rent(Math.Max(ReadSize, _input.Length * 2));
                _input.AsSpan(_start, kept).CopyTo(grown);
                Return();
                _input = grown;
            }

            _start = 0;
            _end = kept;
        }

        return _input.AsMemory(_end);
    }

    /// <summary>Gives the input buffer back (the indexes are the caller's to reset).</summary>
    private void Return()
    {
        if (_input.Length > 0)
        {
            // Cleared whole: a dialogue's input has held credentials (LOGIN's, AUTHENTICATE's), consumed or not.
            _input.AsSpan().Clear();
            ArrayPool<byte>.Shared.Return(_input);
            _input = [];
        }
    }
}
