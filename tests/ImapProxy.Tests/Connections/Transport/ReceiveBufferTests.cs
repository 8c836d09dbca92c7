using System.Buffers;
using System.Runtime.InteropServices;
using ImapProxy.Connections.Transport;
using Xunit;

namespace ImapProxy.Tests.Connections.Transport;

/// <summary>
/// The pooled receive buffer: what it keeps, and that a clearing release zeroes every byte it received. Each test has a
/// pool of its own, so no other test rents an array while it is looked at.
/// </summary>
public sealed class ReceiveBufferTests
{
    private readonly ArrayPool<byte> _pool = ArrayPool<byte>.Create();

    [Fact]
    public void ClearingRelease_ZeroesWhatWasReceived_EvenWhenConsumed_AndLeavesTheRestOfTheArrayAlone()
    {
        var buffer = new ReceiveBuffer(_pool);
        var array = ArrayOf(buffer.GetRoom());
        array.AsSpan().Fill(0xAA); // what the pool's array held before: not the buffer's to clear
        "a LOGIN user secret\r\n"u8.CopyTo(array);
        buffer.Received(21);
        buffer.Consume(21);
        "b NOOP\r\n"u8.CopyTo(array); // consumed bytes are dropped: the next bytes land at the start again
        buffer.Received(8);

        buffer.Release(clear: true);

        Assert.All(array[..21], b => Assert.Equal(0, b));
        Assert.All(array[21..], b => Assert.Equal(0xAA, b));
        Assert.True(buffer.IsEmpty);
    }

    [Fact]
    public void Growing_KeepsWhatWasNotConsumed_AndClearsTheArrayItLeaves()
    {
        var buffer = new ReceiveBuffer(_pool);
        var first = ArrayOf(buffer.GetRoom());
        var line = new byte[first.Length - 512]; // leaves less room than the buffer asks for
        line.AsSpan().Fill((byte)'x');
        line.CopyTo(first);
        buffer.Received(line.Length);

        var grown = ArrayOf(buffer.GetRoom(), offset: line.Length); // the kept bytes come first

        Assert.NotSame(first, grown);
        Assert.All(first[..line.Length], b => Assert.Equal(0, b));
        Assert.True(buffer.Bytes.SequenceEqual(line));

        grown[line.Length] = (byte)'\r';
        buffer.Received(1);
        buffer.Release(clear: true);
        Assert.All(grown[..(line.Length + 1)], b => Assert.Equal(0, b));
    }

    private static byte[] ArrayOf(Memory<byte> room, int offset = 0)
    {
        Assert.True(MemoryMarshal.TryGetArray<byte>(room, out var segment));
        Assert.Equal(offset, segment.Offset);
        return segment.Array!;
    }
}
