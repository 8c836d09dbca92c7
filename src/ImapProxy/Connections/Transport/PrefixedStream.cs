namespace ImapProxy.Connections.Transport;

/// <summary>
/// Reads <paramref name="prefix"/> first, then <paramref name="inner"/>; writes go to <paramref name="inner"/>. For
/// the one case where bytes read ahead must go back in front of a stream: a TLS ClientHello that arrived with the
/// PROXY header that precedes it.
/// </summary>
internal sealed class PrefixedStream(byte[] prefix, Stream inner) : AsyncOnlyStream
{
    private int _offset;

    /// <summary>The stream after the prefix.</summary>
    public Stream Inner => inner;

    /// <summary>Whether every byte of the prefix has been read: from now on this stream is <see cref="Inner"/>.</summary>
    public bool IsDrained => _offset == prefix.Length;

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var left = prefix.Length - _offset;
        if (left == 0)
        {
            return inner.ReadAsync(buffer, cancellationToken);
        }

        // A zero-byte read waits for data: there is some.
        var take = Math.Min(left, buffer.Length);
        prefix.AsSpan(_offset, take).CopyTo(buffer.Span);
        _offset += take;
        return ValueTask.FromResult(take);
    }

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
        inner.WriteAsync(buffer, cancellationToken);

    public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

    // Writes pass straight through, so there is nothing to flush here; SslStream's Dispose flushes its inner stream.
    public override void Flush() => inner.Flush();
}
