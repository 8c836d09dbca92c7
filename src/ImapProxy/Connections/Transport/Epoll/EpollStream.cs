using System.Net.Sockets;
using System.Runtime.CompilerServices;

namespace ImapProxy.Connections.Transport.Epoll;

/// <summary>
/// A stream over an <see cref="EpollSocket"/>, behaving as <see cref="SocketStream"/> does: failures are
/// <see cref="IOException"/>s over the <see cref="SocketException"/>; a read whose token fires while it waits ends by
/// shutting the socket down for receiving, a write by shutting it down altogether (a cancelled wait ends its
/// connection; callers close it after any cancellation). Each read and write tries the socket first, and watches its
/// token only if it has to wait. Disposing takes the socket off its loop and closes it.
/// </summary>
internal sealed class EpollStream(EpollSocket socket) : AsyncOnlyStream, ISocketControl
{
    public EpollSocket Socket { get; } = socket;

    public void Shutdown(SocketShutdown how) => Socket.Shutdown(how);

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<int>(cancellationToken);
        }

        // Tried first: only a read that has to wait needs the token watched (the pre-auth dialogue's reads carry a
        // deadline, and registering on it costs a lock each time).
        var read = Socket.ReceiveAsync(buffer);
        if (read.IsCompletedSuccessfully)
        {
            return read;
        }

        return cancellationToken.CanBeCanceled ? AwaitReadOrCancelAsync(read, cancellationToken) : AwaitReadAsync(read);
    }

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (buffer.IsEmpty)
        {
            return ValueTask.CompletedTask;
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled(cancellationToken);
        }

        var write = Socket.SendAsync(buffer);
        if (write.IsCompletedSuccessfully)
        {
            return write;
        }

        return cancellationToken.CanBeCanceled ? AwaitWriteOrCancelAsync(write, cancellationToken) : AwaitWriteAsync(write);
    }

    public Task<bool> WaitForPeerCloseAsync(CancellationToken cancellationToken) => Socket.WaitForPeerCloseAsync(cancellationToken);

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            Socket.Dispose();
        }

        base.Dispose(disposing);
    }

    // The waits below are pooled: a session's reads and writes in its dialogue and hand-over wait several times per
    // login, and each wait would otherwise leave a state machine box behind (the largest item of a login's garbage).
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private static async ValueTask<int> AwaitReadAsync(ValueTask<int> read)
    {
        try
        {
            return await read;
        }
        catch (SocketException ex)
        {
            throw ReadFailed(ex);
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private static async ValueTask AwaitWriteAsync(ValueTask write)
    {
        try
        {
            await write;
        }
        catch (SocketException ex)
        {
            throw WriteFailed(ex);
        }
    }

    /// <summary>A read under way, until it completes or the token fires (which shuts the socket down for receiving).</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<int> AwaitReadOrCancelAsync(ValueTask<int> read, CancellationToken cancellationToken)
    {
        int count;

        // Registered on a token that fired already, the shutdown runs at once.
        using (cancellationToken.UnsafeRegister(static state => ((EpollSocket)state!).Shutdown(SocketShutdown.Receive), Socket))
        {
            try
            {
                count = await read;
            }
            catch (SocketException) when (cancellationToken.IsCancellationRequested)
            {
                count = 0;
            }
            catch (SocketException ex)
            {
                throw ReadFailed(ex);
            }
        }

        // The end of stream (or error) the shutdown caused is the cancellation.
        cancellationToken.ThrowIfCancellationRequested();
        return count;
    }

    /// <summary>A write under way, until it completes or the token fires (which shuts the socket down altogether).</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask AwaitWriteOrCancelAsync(ValueTask write, CancellationToken cancellationToken)
    {
        using (cancellationToken.UnsafeRegister(static state => ((EpollSocket)state!).Shutdown(SocketShutdown.Both), Socket))
        {
            try
            {
                await write;
            }
            catch (SocketException) when (cancellationToken.IsCancellationRequested)
            {
                // The shutdown ended it.
            }
            catch (SocketException ex)
            {
                throw WriteFailed(ex);
            }
        }

        cancellationToken.ThrowIfCancellationRequested();
    }

    private static IOException ReadFailed(SocketException ex) =>
        new($"Unable to read data from the transport connection: {ex.Message}.", ex);

    private static IOException WriteFailed(SocketException ex) =>
        new($"Unable to write data to the transport connection: {ex.Message}.", ex);
}
