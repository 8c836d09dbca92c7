using System.Buffers;

namespace ImapProxy.Protocol.Tests.TestSupport;

/// <summary>
/// The reading side of a pipe, as a parser sees it: each read presents the bytes not yet consumed (in the
/// segments they arrived in) followed by the new ones; <see cref="AdvanceTo"/> drops what was consumed. Consumed
/// bytes are overwritten, as a pipe reuses its memory, so a consumer that kept a reference to them is caught.
/// </summary>
internal sealed class SimulatedPipe
{
    private const byte Poison = 0xEE;

    private readonly List<byte[]> _segments = [];
    private int _firstOffset;

    /// <summary>Bytes written and not consumed yet.</summary>
    public long Length => _segments.Sum(s => (long)s.Length) - _firstOffset;

    /// <summary>The largest <see cref="Length"/> seen at any read.</summary>
    public long HighWaterMark { get; private set; }

    public void Write(ReadOnlySpan<byte> chunk)
    {
        if (!chunk.IsEmpty)
        {
            _segments.Add(chunk.ToArray());
        }
    }

    /// <summary>What a <c>ReadAsync</c> would return now.</summary>
    public ReadOnlySequence<byte> Read()
    {
        HighWaterMark = Math.Max(HighWaterMark, Length);
        var memories = new List<ReadOnlyMemory<byte>>(_segments.Count);
        for (var i = 0; i < _segments.Count; i++)
        {
            memories.Add(i == 0 ? _segments[i].AsMemory(_firstOffset) : _segments[i]);
        }

        return Sequences.FromChunks(memories);
    }

    /// <summary>Drops <paramref name="consumed"/> bytes from the front (the length of the consumed slice).</summary>
    public void AdvanceTo(long consumed)
    {
        while (consumed > 0)
        {
            var first = _segments[0];
            var available = first.Length - _firstOffset;
            var take = (int)Math.Min(available, consumed);
            first.AsSpan(_firstOffset, take).Fill(Poison);
            _firstOffset += take;
            consumed -= take;
            if (_firstOffset == first.Length)
            {
                _segments.RemoveAt(0);
                _firstOffset = 0;
            }
        }
    }

    /// <summary>Everything not consumed yet, as one array.</summary>
    public byte[] Unconsumed() => Read().ToArray();

    /// <summary>Drops every buffered byte (what a session does with plaintext pipelined behind STARTTLS).</summary>
    public void Clear() => AdvanceTo(Length);
}
