using System.Buffers;

namespace ImapProxy.Backends;

/// <summary>
/// A buffer writer over arrays rented from the shared pool, for the commands of one backend hand-over: nothing is
/// allocated per login. What was written is zeroed whenever it is cleared and before the array goes back (the buffer
/// holds credentials), so no rented array ever returns to the pool with a password in it.
/// </summary>
internal sealed class RentedBufferWriter : IBufferWriter<byte>, IDisposable
{
    private const int MinimumSize = 512;

    private byte[] _buffer = [];
    private int _written;

    public ReadOnlyMemory<byte> WrittenMemory => _buffer.AsMemory(0, _written);

    public ReadOnlySpan<byte> WrittenSpan => _buffer.AsSpan(0, _written);

    public int WrittenCount => _written;

    public void Advance(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (count > _buffer.Length - _written)
        {
            throw new InvalidOperationException("Advanced past the end of the buffer.");
        }

        _written += count;
    }

    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        Ensure(sizeHint);
        return _buffer.AsMemory(_written);
    }

    public Span<byte> GetSpan(int sizeHint = 0)
    {
        Ensure(sizeHint);
        return _buffer.AsSpan(_written);
    }

    /// <summary>Zeroes what was written and starts again (the array is kept).</summary>
    public void Clear()
    {
        _buffer.AsSpan(0, _written).Clear();
        _written = 0;
    }

    /// <summary>Zeroes what was written and returns the array; the writer may be used again (it rents anew).</summary>
    public void Dispose()
    {
        Clear();
        if (_buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = [];
        }
    }

    private void Ensure(int sizeHint)
    {
        var needed = _written + Math.Max(sizeHint, 1);
        if (needed <= _buffer.Length)
        {
            return;
        }

        var grown = ArrayPool<byte>.Shared.Rent(Math.Max(needed, Math.Max(MinimumSize, _buffer.Length * 2)));
        if (_buffer.Length > 0)
        {
            _buffer.AsSpan(0, _written).CopyTo(grown);
            _buffer.AsSpan(0, _written).Clear();
            ArrayPool<byte>.Shared.Return(_buffer);
        }

        _buffer = grown;
    }
}
