using System.Net.Sockets;

namespace ImapProxy.Connections.Transport.Epoll;

/// <summary>
/// A stream over an <see cref="EpollSocket"/>, behaving as <see cref="SocketStream"/> does: failures are
/// <see cref="IOException"/>s over the <see cref="SocketException"/>; a read whose token fires ends by shutting the
/// socket down for receiving, a write by shutting it down altogether (every cancelled read or write ends its
/// connection); reads and writes without a token go straight to the socket. Disposing takes the socket off its loop;
/// the <see cref="Socket"/> stays its owner's to dispose, afterwards.
/// </summary>
internal sealed class EpollStream(EpollSocket socket) : Stream, IPeerCloseWatch
{
    public EpollSocket Socket { get; } = socket;

    public override bool CanRead => true;

    public override bool CanWrite => true;

    public override bool CanSeek => false;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.CanBeCanceled)
        {
            return ReadUntilCancelledAsync(buffer, cancellationToken);
        }

        var read = Socket.ReceiveAsync(buffer);
        return read.IsCompletedSuccessfully ? read : AwaitReadAsync(read);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (buffer.IsEmpty)
        {
            return ValueTask.CompletedTask;
        }

        if (cancellationToken.CanBeCanceled)
        {
            return WriteUntilCancelledAsync(buffer, cancellationToken);
        }

        var write = Socket.SendAsync(buffer);
        return write.IsCompletedSuccessfully ? write : AwaitWriteAsync(write);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task<bool> WaitForPeerCloseAsync(CancellationToken cancellationToken) => Socket.WaitForPeerCloseAsync(cancellationToken);

    public override void Flush()
    {
        // Writes are never buffered here.
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("Synchronous I/O is not supported.");

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("Synchronous I/O is not supported.");

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            Socket.Dispose();
        }

        base.Dispose(disposing);
    }

    private static async ValueTask<int> AwaitReadAsync(ValueTask<int> read)
    {
        try
        {
            return await read;
        }
        catch (SocketException ex)
        {
            throw new IOException($"Unable to read data from the transport connection: {ex.Message}.", ex);
        }
    }

    private static async ValueTask AwaitWriteAsync(ValueTask write)
    {
        try
        {
            await write;
        }
        catch (SocketException ex)
        {
            throw new IOException($"Unable to write data to the transport connection: {ex.Message}.", ex);
        }
    }

    private async ValueTask<int> ReadUntilCancelledAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        int read;
        using (cancellationToken.UnsafeRegister(static state => ImapSocketConnection.ShutdownQuietly((Socket)state!, SocketShutdown.Receive), Socket.Socket))
        {
            try
            {
                read = await AwaitReadAsync(Socket.ReceiveAsync(buffer));
            }
            catch (IOException) when (cancellationToken.IsCancellationRequested)
            {
                read = 0;
            }
        }

        // The end of stream (or error) the shutdown caused is the cancellation.
        cancellationToken.ThrowIfCancellationRequested();
        return read;
    }

    private async ValueTask WriteUntilCancelledAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        using (cancellationToken.UnsafeRegister(static state => ImapSocketConnection.ShutdownQuietly((Socket)state!, SocketShutdown.Both), Socket.Socket))
        {
            try
            {
                await AwaitWriteAsync(Socket.SendAsync(buffer));
            }
            catch (IOException) when (cancellationToken.IsCancellationRequested)
            {
                // The shutdown ended it.
            }
        }

        cancellationToken.ThrowIfCancellationRequested();
    }
}
