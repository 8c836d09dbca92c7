using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;

namespace ImapProxy.Connections.Transport;

/// <summary>
/// One send on any socket, from a process-wide pool. A socket's own <c>SendAsync</c> keeps an event-args object
/// (about 360 bytes with its callback) cached on the socket for the rest of its life; a proxied session has two
/// sockets that are idle almost always, and a send takes microseconds, so senders are shared instead (as Kestrel's
/// socket transport does).
/// </summary>
internal sealed class SocketSender : SocketAsyncEventArgs, IValueTaskSource
{
    /// <summary>Senders kept for reuse; more can be out at once (sends blocked on slow clients), and are then made anew.</summary>
    private const int MaxPooled = 1024;

    private static readonly ConcurrentQueue<SocketSender> s_pool = new();
    private static int s_pooled;

    private ManualResetValueTaskSourceCore<bool> _completion; // continuations run where the send completes

    private SocketSender()
        : base(unsafeSuppressExecutionContextFlow: true)
    {
    }

    /// <summary>Sends all of <paramref name="buffer"/>; failures are <see cref="IOException"/>s, as NetworkStream's.</summary>
    public static ValueTask SendAsync(Socket socket, ReadOnlyMemory<byte> buffer)
    {
        var sender = s_pool.TryDequeue(out var pooled) ? pooled : new SocketSender();
        if (pooled is not null)
        {
            Interlocked.Decrement(ref s_pooled);
        }

        sender._completion.Reset();
        sender.SetBuffer(MemoryMarshal.AsMemory(buffer));
        bool pending;
        try
        {
            pending = socket.SendAsync(sender);
        }
        catch
        {
            sender.Release();
            throw;
        }

        if (pending)
        {
            return new ValueTask(sender, sender._completion.Version);
        }

        var failure = sender.Failure(buffer.Length);
        sender.Release();
        return failure is null ? ValueTask.CompletedTask : ValueTask.FromException(failure);
    }

    protected override void OnCompleted(SocketAsyncEventArgs e) => _completion.SetResult(true);

    void IValueTaskSource.GetResult(short token)
    {
        _completion.GetResult(token);
        var failure = Failure(Count);
        Release(); // after its state was read: from here on another send may use it
        if (failure is not null)
        {
            throw failure;
        }
    }

    ValueTaskSourceStatus IValueTaskSource.GetStatus(short token) => _completion.GetStatus(token);

    void IValueTaskSource.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _completion.OnCompleted(continuation, state, token, flags);

    private IOException? Failure(int length)
    {
        if (SocketError != SocketError.Success)
        {
            return new IOException($"Unable to write data to the transport connection: {SocketError}.", new SocketException((int)SocketError));
        }

        // A stream socket's send completes with every byte sent; anything else would lose data silently.
        return BytesTransferred == length ? null : new IOException($"The socket sent {BytesTransferred} of {length} bytes.");
    }

    private void Release()
    {
        SetBuffer(Memory<byte>.Empty); // the caller's buffer (pooled, often) is not kept
        if (Interlocked.Increment(ref s_pooled) <= MaxPooled)
        {
            s_pool.Enqueue(this);
        }
        else
        {
            Interlocked.Decrement(ref s_pooled);
            Dispose();
        }
    }
}
