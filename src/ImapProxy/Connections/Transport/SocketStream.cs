using System.Net.Sockets;

namespace ImapProxy.Connections.Transport;

/// <summary>
/// The stream over each of a session's two sockets (the client's and the backend's). A read given a token that
/// fires is ended by shutting the socket down for receiving, not through the socket's own cancellation: every read
/// here that can be cancelled (pre-auth dialogue, TLS handshake, hand-over) ends its connection when it is, and the
/// socket's own way keeps the last registration of its cached receive operation alive for the socket's whole life
/// (a token node, its table and the dead token source, about 220 bytes per socket, measured in heap dumps of idle
/// sessions). Reads without a token, as the splice makes them, go straight to the socket. Writes go through
/// <see cref="SocketSender"/>s from a shared pool rather than an event-args object cached on each socket; a write
/// given a token that fires shuts the socket down altogether, which ends a send stuck on a client that does not read.
/// Disposing the stream disposes the socket.
/// </summary>
internal sealed class SocketStream(Socket socket) : NetworkStream(socket, ownsSocket: false), ISocketControl
{
    /// <summary>The socket (NetworkStream keeps it to derived classes).</summary>
    internal new Socket Socket => base.Socket;

    public void Shutdown(SocketShutdown how) => ShutdownQuietly(Socket, how);

    public async Task<bool> WaitForPeerCloseAsync(CancellationToken cancellationToken)
    {
        try
        {
            // A zero-byte receive completes when data arrives and at the end of the stream; only data is available.
            await Socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None, cancellationToken);
            return Socket.Available == 0;
        }
        catch (SocketException)
        {
            return true; // reset
        }
        catch (ObjectDisposedException)
        {
            return true;
        }
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        cancellationToken.CanBeCanceled ? ReadUntilCancelledAsync(buffer, cancellationToken) : base.ReadAsync(buffer, CancellationToken.None);

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (buffer.IsEmpty)
        {
            return ValueTask.CompletedTask;
        }

        return cancellationToken.CanBeCanceled ? WriteUntilCancelledAsync(buffer, cancellationToken) : SocketSender.SendAsync(Socket, buffer);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    private async ValueTask WriteUntilCancelledAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        using (cancellationToken.UnsafeRegister(static state => ShutdownQuietly((Socket)state!, SocketShutdown.Both), Socket))
        {
            try
            {
                await SocketSender.SendAsync(Socket, buffer);
            }
            catch (IOException) when (cancellationToken.IsCancellationRequested)
            {
                // The shutdown below ended it.
            }
        }

        cancellationToken.ThrowIfCancellationRequested();
    }

    private async ValueTask<int> ReadUntilCancelledAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        int read;
        using (cancellationToken.UnsafeRegister(static state => ShutdownQuietly((Socket)state!, SocketShutdown.Receive), Socket))
        {
            try
            {
                read = await base.ReadAsync(buffer, CancellationToken.None);
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

    protected override void Dispose(bool disposing)
    {
        // Not NetworkStream's own ownership: that shuts the socket down before closing it, which the other engine does
        // not; a plain dispose closes both alike.
        base.Dispose(disposing);
        if (disposing)
        {
            Socket.Dispose();
        }
    }

    /// <summary>Shuts a socket's direction down; a socket already closed or reset needs nothing more.</summary>
    internal static void ShutdownQuietly(Socket socket, SocketShutdown how)
    {
        try
        {
            socket.Shutdown(how);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // Already closed by the peer or disposed.
        }
    }
}
