using System.Runtime.InteropServices;
using ImapProxy.Backends;
using Xunit;

namespace ImapProxy.Tests.Backends;

/// <summary>The hand-over's command buffer: rented arrays, which must never go back to the pool holding a credential.</summary>
public sealed class RentedBufferWriterTests
{
    [Fact]
    public void WhatWasWritten_GrowsAcrossArrays_AndReadsBackInOrder()
    {
        using var writer = new RentedBufferWriter();
        var expected = new byte[5000];
        Random.Shared.NextBytes(expected);
        for (var offset = 0; offset < expected.Length; offset += 700)
        {
            var chunk = expected.AsSpan(offset, Math.Min(700, expected.Length - offset));
            chunk.CopyTo(writer.GetSpan(chunk.Length));
            writer.Advance(chunk.Length);
        }

        Assert.Equal(expected, writer.WrittenSpan.ToArray());
        Assert.Throws<InvalidOperationException>(() => writer.Advance(writer.GetSpan().Length + 1));
    }

    [Fact]
    public void ClearAndDispose_ZeroTheBytesWritten_IncludingThoseOfAnArrayOutgrown()
    {
        var writer = new RentedBufferWriter();
        "a1 LOGIN alice secret"u8.CopyTo(writer.GetSpan(21));
        writer.Advance(21);
        var first = ArrayOf(writer.WrittenMemory);

        // Growing copies the bytes to a larger array and zeroes the old one before it goes back.
        writer.GetSpan(first.Length + 1);
        Assert.All(first.AsSpan(0, 21).ToArray(), b => Assert.Equal(0, b));
        var second = ArrayOf(writer.WrittenMemory);
        Assert.NotSame(first, second);
        Assert.Equal("a1 LOGIN alice secret"u8.ToArray(), writer.WrittenSpan.ToArray());

        writer.Clear();
        Assert.Equal(0, writer.WrittenCount);
        Assert.All(second.AsSpan(0, 21).ToArray(), b => Assert.Equal(0, b));

        "secret"u8.CopyTo(writer.GetSpan(6));
        writer.Advance(6);
        writer.Dispose();
        Assert.All(second.AsSpan(0, 6).ToArray(), b => Assert.Equal(0, b));
        Assert.Equal(0, writer.WrittenCount);
    }

    private static byte[] ArrayOf(ReadOnlyMemory<byte> memory) =>
        MemoryMarshal.TryGetArray(memory, out var segment) ? segment.Array! : throw new InvalidOperationException("not an array");
}
