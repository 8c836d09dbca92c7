using System.Buffers;
using System.IO.Pipelines;

namespace ImapProxy.Connections;

/// <summary>
/// A stream over the connection's transport pipes, so TLS (implicit or after STARTTLS) can put an
/// <see cref="System.Net.Security.SslStream"/> on top of the plain connection Kestrel gave us. Zero-byte reads wait
/// for data without consuming it.
/// </summary>
/// <remarks>
/// A read cancelled through <see cref="PipeReader.CancelPendingRead"/> ends the stream: it and every later read
/// return 0. That is how the splice stops a TLS session's reads without a token registration per idle session
/// (SslStream may read its inner stream more than once per read of its own, so a one-shot cancel could be lost).
/// Writes still work after that end: the BYE after a kick goes out through them.
/// </remarks>
internal sealed class DuplexPipeStream(PipeReader input, PipeWriter output) : Stream
{
    private bool _ended;

    /// <summary>The transport's input: cancelling its pending read ends this stream's reads.</summary>
    public PipeReader Input => input;

    /// <summary>
    /// While set, writes only copy into the transport's pipe and <see cref="FlushAsync(CancellationToken)"/> sends
    /// them. The splice sets it around its own writes only, so that the TLS records of one backend read leave in one
    /// send; whatever SslStream writes by itself (a handshake reply) is still sent at once.
    /// </summary>
    public bool DeferFlush { get; set; }

    public override bool CanRead => true;

    public override bool CanWrite => true;

    public override bool CanSeek => false;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        while (!_ended)
        {
            var result = await input.ReadAsync(cancellationToken);
            var data = result.Buffer;
            if (result.IsCanceled)
            {
                input.AdvanceTo(data.Start);
                _ended = true;
                return 0;
            }

            if (buffer.Length == 0)
            {
                input.AdvanceTo(data.Start);
                return 0;
            }

            if (!data.IsEmpty)
            {
                var take = (int)Math.Min(data.Length, buffer.Length);
                data.Slice(0, take).CopyTo(buffer.Span);
                input.AdvanceTo(data.GetPosition(take));
                return take;
            }

            input.AdvanceTo(data.End);
            if (result.IsCompleted)
            {
                return 0;
            }
        }

        return 0;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (DeferFlush)
        {
            output.Write(buffer.Span);
            return ValueTask.CompletedTask;
        }

        return WriteAndFlushAsync(buffer, cancellationToken);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async Task FlushAsync(CancellationToken cancellationToken)
    {
        if ((await output.FlushAsync(cancellationToken)).IsCompleted)
        {
            throw new IOException("The client connection is closed.");
        }
    }

    public override void Flush() => throw new NotSupportedException("Synchronous I/O is not supported.");

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("Synchronous I/O is not supported.");

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("Synchronous I/O is not supported.");

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    private async ValueTask WriteAndFlushAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken)
    {
        if ((await output.WriteAsync(buffer, cancellationToken)).IsCompleted)
        {
            throw new IOException("The client connection is closed.");
        }
    }
}
