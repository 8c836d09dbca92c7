using System.Buffers;
using System.Net.Sockets;
using ImapProxy.Connections.Transport.Epoll;
using ImapProxy.Protocol.Responses;
using ImapProxy.Telemetry;
using ImapProxy.Tls;

namespace ImapProxy.Splice;

/// <summary>
/// The splice of a client and a plaintext backend whose sockets both live on one epoll engine thread: event handlers
/// on that thread instead of two copy loops. A readiness event reads what is there into the thread's shared buffer
/// and sends it on at once; only bytes the far side could not take yet are copied into a rented buffer, and that
/// direction reads nothing more until they are gone (back-pressure). An idle plaintext session holds no buffer, no
/// task and no pending operation: two registrations and this object.
/// </summary>
/// <remarks>
/// A TLS client is spliced the same way, through its connection's record layer (<see cref="TlsRecordLayer"/>):
/// ciphertext read from the client is fed to OpenSSL and decrypted on the spot, plaintext from the backend encrypted
/// into records that go out at once, and the connection's buffers are given back whenever it falls idle.
/// <para>
/// Everything here runs on the loop thread, so the two directions never run at once. Ends are reported exactly as
/// the stream splice reports them (<see cref="Splicer"/>): a stop requested by a kick or the shutdown shuts the
/// sockets down (<see cref="SpliceControl"/>) and the next event sees the end; a write to the client that is still
/// under way counts as one for <see cref="SpliceControl.TryBeginClientWrite"/>, so a kick also ends a client that
/// does not read. A client that ends its side (a shutdown of its sending side, or its TLS close_notify) ends the
/// splice only once the backend, told the same way, has closed: the answers to its last commands still reach it.
/// </para>
/// </remarks>
internal sealed class EpollSplice : IReadinessListener
{
    private readonly EpollSocket _client;
    private readonly EpollSocket _backend;
    private readonly TlsRecordLayer? _tls;
    private readonly ImapProxyMetrics _metrics;
    private readonly SpliceControl _control;
    private readonly ResponseBoundaryTracker _boundary = new();
    private readonly ISpliceOwner _owner;
    private Unsent _toBackend;
    private Unsent _toClient;
    private long _fromClient;
    private long _fromBackend;
    private bool _finished;
    private Timer? _clientEnded; // the client ended its side; set until the backend closes (or the limit stops it)
    private bool _tlsBuffersGrew; // a BIO buffer may have grown beyond TlsRecordLayer.KeepUpTo since the last trim

    private EpollSplice(EpollSocket client, EpollSocket backend, TlsRecordLayer? tls, ImapProxyMetrics metrics, SpliceControl control, ISpliceOwner owner)
    {
        _client = client;
        _backend = backend;
        _tls = tls;
        _tlsBuffersGrew = tls is not null; // the handshake's flights and the login's records are in the BIOs' buffers
        _metrics = metrics;
        _control = control;
        _owner = owner;
    }

    /// <summary>Whether the client's transport and the backend can be spliced here: both on the epoll engine, on one thread.</summary>
    public static bool CanSplice(Stream clientTransport, Stream backend) =>
        clientTransport is EpollStream c && backend is EpollStream b && c.Socket.Loop == b.Socket.Loop;

    /// <summary>
    /// Starts the splice on the sockets' thread; <paramref name="owner"/> is told of its end. <paramref name="tls"/>,
    /// when given, is the client connection's record layer (the owner's: the splice leaves it as it is at the end).
    /// <paramref name="fromClient"/> (what the client pipelined behind its login, in plaintext) goes to the backend
    /// first, <paramref name="fromBackend"/> (what the backend sent behind its login OK) to the client first.
    /// </summary>
    public static void Start(EpollStream client, EpollStream backend, TlsRecordLayer? tls, ReadOnlyMemory<byte> fromClient, ReadOnlyMemory<byte> fromBackend, ImapProxyMetrics metrics, SpliceControl control, ISpliceOwner owner)
    {
        var splice = new EpollSplice(client.Socket, backend.Socket, tls, metrics, control, owner);
        splice._client.Loop.Execute(static state => ((Starter)state!).Run(), new Starter(splice, fromClient, fromBackend));
    }

    void IReadinessListener.OnReady(EpollSocket socket, bool readable, bool writable)
    {
        try
        {
            OnReady(socket, readable, writable);
            TrimTls();
        }
        catch (ObjectDisposedException) when (!_finished)
        {
            // A socket closed under the session (nothing in the proxy does that while a splice runs).
            Finish(socket == _client ? SpliceOutcome.ClientError : SpliceOutcome.BackendError);
        }
        catch (Exception ex) when (!_finished)
        {
            // A bug: the session ends (it would otherwise wait forever), and the loop thread logs it and goes on.
            Finish(socket == _client ? SpliceOutcome.ClientError : SpliceOutcome.BackendError);
            _client.Loop.ReportHandlerFailure(ex);
        }
    }

    private void OnReady(EpollSocket socket, bool readable, bool writable)
    {
        if (socket == _client)
        {
            if (writable && _toClient.Buffer is not null)
            {
                FlushToClient();
            }

            if (readable)
            {
                PumpFromClient();
            }
        }
        else
        {
            if (writable && _toBackend.Buffer is not null)
            {
                FlushToBackend();
            }

            if (readable)
            {
                PumpFromBackend();
            }
        }
    }

    private void Begin(ReadOnlyMemory<byte> fromClient, ReadOnlyMemory<byte> fromBackend)
    {
        try
        {
            _client.SetListener(this);
            _backend.SetListener(this);
            if (fromClient.Length > 0 && !ForwardToBackend(fromClient.Span))
            {
                return;
            }

            if (fromBackend.Length > 0 && !DeliverToClient(fromBackend.Span))
            {
                return;
            }

            // What the client sent behind its login may be in the record layer already (the proxy's own TLS
            // connection reads ahead of the dialogue), and so may what OpenSSL wants sent; whatever arrived before the
            // listeners were set is still in the sockets.
            if (_tls is not null && (_tls.HasPendingInput || _tls.PendingOutput > 0) && !DecryptToBackend())
            {
                return;
            }

            PumpFromClient();
            PumpFromBackend();
            TrimTls();
        }
        catch (ObjectDisposedException) when (!_finished)
        {
            Finish(SpliceOutcome.ClientError);
        }
        catch (Exception ex) when (!_finished)
        {
            Finish(SpliceOutcome.ClientError);
            _client.Loop.ReportHandlerFailure(ex);
        }
    }

    /// <summary>Client to backend, until the client has nothing more or the backend takes no more.</summary>
    private void PumpFromClient()
    {
        var buffer = _client.Loop.SharedBuffer;
        while (!_finished && _clientEnded is null && _toBackend.Buffer is null)
        {
            var read = _client.TryReceive(buffer, out var error);
            if (read < 0)
            {
                if (error != SocketError.WouldBlock)
                {
                    Finish(SpliceOutcome.ClientError);
                }

                return;
            }

            if (_control.StopRequested)
            {
                Finish(SpliceOutcome.ClientClosed);
                return;
            }

            if (read == 0)
            {
                ClientEnded();
                return;
            }

            if (_tls is null)
            {
                if (!ForwardToBackend(buffer.AsSpan(0, read)))
                {
                    return;
                }
            }
            else
            {
                if (!_tls.Feed(buffer.AsSpan(0, read)))
                {
                    Finish(SpliceOutcome.ClientError);
                    return;
                }

                if (!DecryptToBackend())
                {
                    return; // ended: the record layer is the owner's already, and must not be touched
                }

                // Large reads grow the read BIO's buffer; and while the backend is full, ciphertext waits in it.
                _tlsBuffersGrew |= read > TlsRecordLayer.KeepUpTo || _tls.PendingInput > 0;
            }
        }
    }

    /// <summary>
    /// TLS: what the client's ciphertext decrypts to, to the backend, until it needs more ciphertext or the backend
    /// takes no more; then whatever reading made OpenSSL say (a key update, an alert) to the client. False if that
    /// ended the splice.
    /// </summary>
    private bool DecryptToBackend()
    {
        var buffer = _client.Loop.SharedBuffer;
        while (!_finished && _toBackend.Buffer is null)
        {
            var read = _tls!.Read(buffer, out var status);
            if (read > 0)
            {
                if (!ForwardToBackend(buffer.AsSpan(0, read)))
                {
                    return false;
                }

                continue;
            }

            if (status == TlsReadStatus.Closed)
            {
                ClientEnded(); // its close_notify: the end of what it sends, as a shutdown of its sending side is
                break;
            }

            if (status != TlsReadStatus.WantRead)
            {
                Finish(SpliceOutcome.ClientError);
                return false;
            }

            break;
        }

        if (_finished || _toClient.Buffer is not null || _tls!.PendingOutput == 0)
        {
            return !_finished;
        }

        if (!_control.TryBeginClientWrite())
        {
            Finish(SpliceOutcome.Cancelled);
            return false;
        }

        return SendTlsOutput();
    }

    /// <summary>Backend to client, until the backend has nothing more or the client takes no more.</summary>
    private void PumpFromBackend()
    {
        var buffer = _backend.Loop.SharedBuffer;
        while (!_finished && _toClient.Buffer is null)
        {
            var read = _backend.TryReceive(buffer, out var error);
            if (read < 0)
            {
                if (error != SocketError.WouldBlock)
                {
                    Finish(SpliceOutcome.BackendError);
                }

                return;
            }

            if (read == 0)
            {
                Finish(_clientEnded is null ? SpliceOutcome.BackendClosed : SpliceOutcome.ClientClosed, backendClosed: true);
                return;
            }

            if (!DeliverToClient(buffer.AsSpan(0, read)))
            {
                return;
            }
        }
    }

    /// <summary>Sends to the backend what the client sent; false if that ended the splice.</summary>
    private bool ForwardToBackend(ReadOnlySpan<byte> bytes)
    {
        var sent = _backend.TrySend(bytes, out _);
        if (sent < 0)
        {
            Finish(SpliceOutcome.BackendError);
            return false;
        }

        if (sent < bytes.Length)
        {
            _toBackend = Unsent.Keep(bytes[sent..]);
        }

        _fromClient += bytes.Length;
        _metrics.ClientToBackend(bytes.Length);
        return true;
    }

    /// <summary>Sends to the client what the backend sent (encrypted first, for TLS); false if that ended the splice.</summary>
    private bool DeliverToClient(ReadOnlySpan<byte> bytes)
    {
        if (!_control.TryBeginClientWrite())
        {
            // Dropped, so not seen by the boundary tracker: a BYE may follow only what the client has received.
            Finish(SpliceOutcome.Cancelled);
            return false;
        }

        _boundary.Advance(bytes);
        _fromBackend += bytes.Length;
        _metrics.BackendToClient(bytes.Length);

        if (_tls is not null)
        {
            _tlsBuffersGrew |= bytes.Length > TlsRecordLayer.KeepUpTo;
            if (!_tls.Write(bytes))
            {
                _control.EndClientWrite();
                Finish(SpliceOutcome.ClientError);
                return false;
            }

            return SendTlsOutput();
        }

        var sent = _client.TrySend(bytes, out _);
        if (sent < 0)
        {
            _control.EndClientWrite();
            Finish(SpliceOutcome.ClientError);
            return false;
        }

        if (sent < bytes.Length)
        {
            // The write stays under way (for a kick) until the rest is gone.
            _toClient = Unsent.Keep(bytes[sent..]);
            return true;
        }

        _control.EndClientWrite();
        return true;
    }

    /// <summary>
    /// TLS, within a client write: the records waiting in OpenSSL go to the client through the shared buffer, until
    /// none is left (the write ends) or the client takes no more (the rest is kept; the write stays under way).
    /// False if that ended the splice.
    /// </summary>
    private bool SendTlsOutput()
    {
        var buffer = _client.Loop.SharedBuffer;
        while (true)
        {
            var taken = _tls!.TakeOutput(buffer);
            if (taken == 0)
            {
                _control.EndClientWrite();
                return true;
            }

            var sent = _client.TrySend(buffer.AsSpan(0, taken), out _);
            if (sent < 0)
            {
                _control.EndClientWrite();
                Finish(SpliceOutcome.ClientError);
                return false;
            }

            if (sent < taken)
            {
                _toClient = Unsent.Keep(buffer.AsSpan(sent, taken - sent));
                return true;
            }
        }
    }

    private void FlushToBackend()
    {
        var sent = _backend.TrySend(_toBackend.Remaining, out _);
        if (sent < 0)
        {
            Finish(SpliceOutcome.BackendError);
            return;
        }

        if (!_toBackend.Advance(sent))
        {
            return;
        }

        // Nothing was read or decrypted while the backend took nothing.
        if (_tls is not null && !DecryptToBackend())
        {
            return;
        }

        PumpFromClient();
    }

    private void FlushToClient()
    {
        var sent = _client.TrySend(_toClient.Remaining, out _);
        if (sent < 0)
        {
            _control.EndClientWrite();
            Finish(SpliceOutcome.ClientError);
            return;
        }

        if (!_toClient.Advance(sent))
        {
            return;
        }

        if (_tls is null)
        {
            _control.EndClientWrite();
        }
        else if (!SendTlsOutput() || _toClient.Buffer is not null)
        {
            return; // ended, or the client is full again
        }

        PumpFromBackend();
    }

    /// <summary>
    /// The client ended its side with everything it sent forwarded: the backend is told (see
    /// <see cref="SpliceControl.ClientEnded"/>), the client is read no more, and the backend's last answers still
    /// reach the client until the backend closes, as they would without the proxy.
    /// </summary>
    private void ClientEnded() => _clientEnded ??= _control.ClientEnded();

    /// <summary>
    /// TLS: once the session is idle again, OpenSSL's grown buffers go back (see <see cref="TlsRecordLayer.Trim"/>): at
    /// the start those the handshake left (a .NET client leaves 384 and 1,036 bytes), later those a large command or
    /// answer grew; one that still holds ciphertext not decrypted yet is tried again after the next event.
    /// </summary>
    private void TrimTls()
    {
        if (_tlsBuffersGrew && !_finished && _toClient.Buffer is null && _toBackend.Buffer is null)
        {
            _tlsBuffersGrew = !_tls!.Trim();
        }
    }

    /// <summary>
    /// The end, once: both sockets are shut down (as the stream splice does) and handed back to operations, unsent
    /// bytes dropped (see the remarks), and the result given to the owner. Nothing may touch this splice's sockets
    /// or record layer afterwards: the owner may dispose them inside <see cref="ISpliceOwner.SpliceEnded"/>, which runs
    /// right here when the engine runs continuations inline.
    /// </summary>
    private void Finish(SpliceOutcome outcome, bool backendClosed = false)
    {
        if (_finished)
        {
            return;
        }

        _finished = true;

        // Records that never left: the client's TLS stream is cut, and no BYE may follow on it.
        var cut = _tls is not null && (_toClient.Buffer is not null || _tls.PendingOutput > 0);
        if (_toClient.Buffer is not null)
        {
            _control.EndClientWrite();
        }

        _toClient.Release();
        _toBackend.Release();
        _clientEnded?.Dispose();
        if (backendClosed)
        {
            _control.EndedByBackendClose();
        }
        else
        {
            _control.Stop(); // the backend is told at once (the session may hold the client a while: a BYE, a delay)
        }

        _client.SetListener(null);
        _backend.SetListener(null);

        // A requested stop wins over however the sockets reported it (a shutdown looks like a close).
        var reported = _control.StopRequested ? SpliceOutcome.Cancelled : outcome;
        var result = new SpliceResult(reported, _fromClient, _fromBackend, _boundary.AtLineStart && !cut, _boundary.SawBye);
        if (_client.Loop.InlineContinuations)
        {
            _owner.SpliceEnded(result, null);
        }
        else
        {
            ThreadPool.UnsafeQueueUserWorkItem(static end => end.Owner.SpliceEnded(end.Result, null), (Owner: _owner, Result: result), preferLocal: false);
        }
    }

    /// <summary>The work item that begins the splice on the loop thread.</summary>
    private sealed class Starter(EpollSplice splice, ReadOnlyMemory<byte> fromClient, ReadOnlyMemory<byte> fromBackend)
    {
        public void Run() => splice.Begin(fromClient, fromBackend);
    }

    /// <summary>Bytes one side did not take yet, in a rented buffer (none while both sides keep up).</summary>
    private struct Unsent
    {
        public byte[]? Buffer;
        private int _offset;
        private int _count;

        public readonly ReadOnlySpan<byte> Remaining => Buffer.AsSpan(_offset, _count);

        public static Unsent Keep(ReadOnlySpan<byte> bytes)
        {
            var buffer = ArrayPool<byte>.Shared.Rent(bytes.Length);
            bytes.CopyTo(buffer);
            return new Unsent { Buffer = buffer, _count = bytes.Length };
        }

        /// <summary>After <paramref name="sent"/> more bytes went out: true once all are gone (the buffer is returned).</summary>
        public bool Advance(int sent)
        {
            _offset += sent;
            _count -= sent;
            if (_count > 0)
            {
                return false;
            }

            Release();
            return true;
        }

        public void Release()
        {
            if (Buffer is not null)
            {
                ArrayPool<byte>.Shared.Return(Buffer);
                this = default;
            }
        }
    }
}
