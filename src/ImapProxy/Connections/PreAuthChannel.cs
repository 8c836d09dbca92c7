using System.Buffers;
using ImapProxy.Backends;
using ImapProxy.Connections.Transport;

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
    private readonly Stream _stream;
    private readonly ReceiveBuffer _input = new();
    private bool _ended;

    /// <summary>A channel on <paramref name="stream"/>; <paramref name="readAhead"/> was received already (read before it).</summary>
    public PreAuthChannel(Stream stream, ReadOnlySpan<byte> readAhead = default)
    {
        _stream = stream;
        _input.Append(readAhead);
    }

    /// <summary>The answers to send; <see cref="FlushAsync"/> sends them.</summary>
    public RentedBufferWriter Output { get; } = new();

    /// <summary>What was received and not consumed.</summary>
    public ReadOnlySequence<byte> Buffered => _input.Sequence;

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

        if (_input.IsEmpty)
        {
            // Nothing kept: the buffer goes back (cleared: a dialogue's input holds credentials) while the client is
            // silent, and is taken again once it speaks.
            _input.Release(clear: true);
            _ = await _stream.ReadAsync(Memory<byte>.Empty, cancellationToken);
        }

        var read = await _stream.ReadAsync(_input.GetRoom(), cancellationToken);
        if (read == 0)
        {
            _ended = true;
            return false;
        }

        _input.Received(read);
        return true;
    }

    /// <summary><paramref name="count"/> bytes of <see cref="Buffered"/> were consumed.</summary>
    public void Consume(long count) => _input.Consume(checked((int)count));

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
    public byte[] TakeBuffered() => _input.TakeAll();

    /// <summary>Returns both buffers (cleared); whatever was not flushed is dropped (the dialogue is over).</summary>
    public void Dispose()
    {
        _input.Release(clear: true);
        Output.Dispose();
    }
}
