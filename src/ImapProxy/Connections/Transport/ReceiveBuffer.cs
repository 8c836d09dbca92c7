using System.Buffers;

namespace ImapProxy.Connections.Transport;

/// <summary>
/// Bytes received from a socket and not yet consumed, in one array from the shared pool: rented on first use, grown
/// (doubling) only while the consumer keeps more than fits, and given back by <see cref="Release"/>. Consumed from the
/// start, received into the room at the end (<see cref="GetRoom"/>, then <see cref="Received"/>). Not thread-safe.
/// </summary>
internal sealed class ReceiveBuffer
{
    private const int MinimumSize = 4096;
    private const int MinimumRoom = 1024;

    private readonly ArrayPool<byte> _pool;
    private byte[] _buffer = [];
    private int _start; // first byte not consumed
    private int _end; // end of the bytes received
    private int _written; // how far from the start the array has held received bytes (what a clearing Release zeroes)

    /// <summary>A buffer renting from <paramref name="pool"/> (the shared pool when null).</summary>
    public ReceiveBuffer(ArrayPool<byte>? pool = null) => _pool = pool ?? ArrayPool<byte>.Shared;

    /// <summary>The bytes received and not consumed.</summary>
    public ReadOnlySpan<byte> Bytes => _buffer.AsSpan(_start, _end - _start);

    /// <summary>The same, as a sequence (valid until the buffer is next changed).</summary>
    public ReadOnlySequence<byte> Sequence => new(_buffer, _start, _end - _start);

    public bool IsEmpty => _start == _end;

    /// <summary>Room to receive into: at least a kilobyte, after what is kept (moved to the start, or into a larger array).</summary>
    public Memory<byte> GetRoom()
    {
        if (_buffer.Length - _end < MinimumRoom)
        {
            var kept = _end - _start;
            if (_start > 0 && _buffer.Length - kept >= MinimumRoom)
            {
                _buffer.AsSpan(_start, kept).CopyTo(_buffer);
            }
            else
            {
                var grown = _pool.Rent(Math.Max(MinimumSize, _buffer.Length * 2));
                _buffer.AsSpan(_start, kept).CopyTo(grown);
                Return(clear: true);
                _buffer = grown;
                _written = kept;
            }

            _start = 0;
            _end = kept;
        }

        return _buffer.AsMemory(_end);
    }

    /// <summary><paramref name="count"/> bytes were received into the last <see cref="GetRoom"/>.</summary>
    public void Received(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, _buffer.Length - _end);
        _end += count;
        _written = Math.Max(_written, _end);
    }

    /// <summary>Appends bytes received elsewhere (what another reader read ahead).</summary>
    public void Append(ReadOnlySpan<byte> bytes)
    {
        while (!bytes.IsEmpty)
        {
            var room = GetRoom().Span;
            var count = Math.Min(room.Length, bytes.Length);
            bytes[..count].CopyTo(room);
            Received(count);
            bytes = bytes[count..];
        }
    }

    /// <summary>The first <paramref name="count"/> bytes were consumed.</summary>
    public void Consume(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, _end - _start);
        _start += count;
        if (_start == _end)
        {
            _start = _end = 0;
        }
    }

    /// <summary>What is not consumed, taken out (nothing is kept).</summary>
    public byte[] TakeAll()
    {
        var bytes = Bytes.ToArray();
        _start = _end = 0;
        return bytes;
    }

    /// <summary>
    /// Drops what is kept and gives the array back, with every byte it received cleared when <paramref name="clear"/>
    /// (they held credentials, consumed or not); the buffer rents again on its next use.
    /// </summary>
    public void Release(bool clear)
    {
        Return(clear);
        _buffer = [];
        _start = _end = _written = 0;
    }

    private void Return(bool clear)
    {
        if (_buffer.Length > 0)
        {
            if (clear)
            {
                // Only what was received into: the rest of the array is as the pool gave it.
                _buffer.AsSpan(0, _written).Clear();
            }

            _pool.Return(_buffer);
        }
    }
}
