using System.Buffers;

namespace ImapProxy.Protocol.Tests.TestSupport;

/// <summary>Builds multi-segment <see cref="ReadOnlySequence{T}"/>s, the shape a pipe hands out.</summary>
internal static class Sequences
{
    /// <summary>A sequence over <paramref name="data"/> whose segments begin at each of <paramref name="splitAt"/>.</summary>
    public static ReadOnlySequence<byte> Create(ReadOnlySpan<byte> data, params int[] splitAt)
    {
        var length = data.Length;
        var bounds = splitAt.Where(p => p > 0 && p < length).Distinct().Order().ToList();
        var chunks = new List<byte[]>();
        var start = 0;
        foreach (var bound in bounds)
        {
            chunks.Add(data[start..bound].ToArray());
            start = bound;
        }

        chunks.Add(data[start..].ToArray());
        return FromChunks(chunks);
    }

    /// <summary>One segment per byte.</summary>
    public static ReadOnlySequence<byte> OneBytePerSegment(ReadOnlySpan<byte> data) =>
        Create(data, Enumerable.Range(1, Math.Max(0, data.Length - 1)).ToArray());

    /// <summary>A sequence made of the given memory blocks, in order, each as its own segment.</summary>
    public static ReadOnlySequence<byte> FromChunks(IReadOnlyList<ReadOnlyMemory<byte>> chunks)
    {
        if (chunks.Count == 0)
        {
            return ReadOnlySequence<byte>.Empty;
        }

        if (chunks.Count == 1)
        {
            return new ReadOnlySequence<byte>(chunks[0]);
        }

        var first = new Segment(chunks[0], 0);
        var last = first;
        for (var i = 1; i < chunks.Count; i++)
        {
            last = last.Append(chunks[i]);
        }

        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    private static ReadOnlySequence<byte> FromChunks(List<byte[]> chunks) =>
        FromChunks(chunks.Select(c => (ReadOnlyMemory<byte>)c).ToList());

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}
