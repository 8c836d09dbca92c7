using System.Net;
using System.Net.Sockets;
using System.Threading.Tasks.Sources;
using ImapProxy.Configuration;
using ImapProxy.Connections.Transport.Epoll;
using ImapProxy.Protocol.Sasl;

namespace ImapProxy.Backends;

/// <summary>
/// One hand-over to a plaintext backend, driven by the readiness events of its client's engine thread: the connect,
/// the greeting, the capabilities and the login are each handled where the event arrives, with no asynchronous
/// method between them. The caller awaits one result (<see cref="Start"/>), which the thread completes once the
/// backend has answered the login (a plaintext session then goes on to the splice on the same thread).
/// </summary>
/// <remarks>
/// Everything runs on the loop thread: the events, the time limit's expiry and the caller's cancellation (both
/// queued to it, and run after its last event when the thread is stopping: never beside an event). The result is set
/// last, after the socket was let go of: the continuation it runs may splice the socket at once. Mirrors
/// <see cref="BackendConnector"/>'s stream path outcome for outcome.
/// </remarks>
#pragma warning disable CA1001 // The reader is returned when the hand-over ends (Release), whichever way it ends; nothing outside it disposes.
internal sealed class EpollBackendLogin : IReadinessListener, IValueTaskSource<BackendLoginResult>
{
    private static readonly Action<object?> s_begin = static state => ((EpollBackendLogin)state!).Begin();
    private static readonly Action<object?> s_timedOut = static state => ((EpollBackendLogin)state!).TimedOut();
    private static readonly Action<object?> s_cancelled = static state => ((EpollBackendLogin)state!).Cancelled();

    private readonly EpollLoop _loop;
    private readonly BackendsOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly BackendLoginDialogue _dialogue;
    private readonly HandoverPhases _phases;
    private readonly LoginMechanism _mechanism;
    private readonly IPEndPoint _endpoint;
    private readonly ClientEndpoints _endpoints;
    private readonly BackendLineReader _reader;
    private readonly long _started;
    private ManualResetValueTaskSourceCore<BackendLoginResult> _completion;
    private ITimer? _timer;
    private CancellationTokenRegistration _cancellation;
    private CancellationToken _cancellationToken;
    private EpollSocket? _socket;
    private SocketAddress? _address;
    private bool _connected;
    private BackendStep _step = BackendStep.ReadLine;
    private int _sent; // of the output, while a send waits for room
    private int _finished;

    public EpollBackendLogin(EpollLoop loop, BackendsOptions options, TimeProvider timeProvider, BackendLoginDialogue dialogue, HandoverPhases phases, LoginMechanism mechanism, IPEndPoint endpoint, ClientEndpoints endpoints)
    {
        _loop = loop;
        _options = options;
        _timeProvider = timeProvider;
        _dialogue = dialogue;
        _phases = phases;
        _mechanism = mechanism;
        _endpoint = endpoint;
        _endpoints = endpoints;
        _reader = new BackendLineReader(options.MaxResponseLine);
        _started = timeProvider.GetTimestamp();
        _completion.RunContinuationsAsynchronously = !loop.InlineContinuations;
    }

    /// <summary>Begins on the loop thread (at once when called there) and returns the hand-over's result.</summary>
    public ValueTask<BackendLoginResult> Start(CancellationToken cancellationToken)
    {
        var limit = _options.ConnectTimeout < _options.LoginTimeout ? _options.ConnectTimeout : _options.LoginTimeout;
        _timer = _timeProvider.CreateTimer(static state => ((EpollBackendLogin)state!).EndOnLoop(s_timedOut), this, limit, Timeout.InfiniteTimeSpan);
        _cancellationToken = cancellationToken;
        _cancellation = cancellationToken.UnsafeRegister(static state => ((EpollBackendLogin)state!).EndOnLoop(s_cancelled), this);
        try
        {
            _loop.Execute(s_begin, this);
        }
        catch (SocketException ex)
        {
            // The loop is stopping: nothing was registered with it, so the hand-over ends here, as a connect that failed.
            Fail(ex);
        }

        return new ValueTask<BackendLoginResult>(this, _completion.Version);
    }

    void IReadinessListener.OnReady(EpollSocket socket, bool readable, bool writable)
    {
        if (Volatile.Read(ref _finished) != 0)
        {
            return;
        }

        try
        {
            if (_connected || Connecting(socket.ContinueConnect(_address!)))
            {
                Run();
            }
        }
        catch (Exception ex)
        {
            Fail(ex);
        }
    }

    /// <summary>On the loop thread: the socket, and the connect under way (or over already).</summary>
    private void Begin()
    {
        if (Volatile.Read(ref _finished) != 0)
        {
            return;
        }

        try
        {
            if (_loop.IsStopping)
            {
                // Queued just before the stop: the thread would see none of the connection's events.
                throw new SocketException((int)SocketError.Shutdown);
            }

            _socket = EpollSocket.BeginConnect(_loop, _endpoint, this, out var address, out var error);
            _address = address;
            if (Connecting(error))
            {
                Run();
            }
        }
        catch (Exception ex)
        {
            Fail(ex);
        }
    }

    /// <summary>
    /// How far the connect got: true once connected (<see cref="Connected"/> has run), false while under way (the socket
    /// reports the outcome as writable) or when it failed (the hand-over has ended).
    /// </summary>
    private bool Connecting(SocketError error)
    {
        if (error is SocketError.InProgress or SocketError.AlreadyInProgress)
        {
            return false;
        }

        if (error is not (SocketError.Success or SocketError.IsConnected))
        {
            Fail(new SocketException((int)error));
            return false;
        }

        Connected();
        return true;
    }

    /// <summary>Connected: the rest of the login's limit begins, and a PROXY header goes first when configured.</summary>
    private void Connected()
    {
        _connected = true;
        var left = _options.LoginTimeout - _timeProvider.GetElapsedTime(_started);
        _timer!.Change(left > TimeSpan.Zero ? left : TimeSpan.Zero, Timeout.InfiniteTimeSpan);
        if (_phases.Endpoint.ProxyProtocol)
        {
            var header = ProxyProtocolHeader.CreateV2(_endpoints.Client, _endpoints.Local);
            header.CopyTo(_dialogue.Output.GetSpan(header.Length));
            _dialogue.Output.Advance(header.Length);
            _step = BackendStep.Send;
        }
    }

    /// <summary>The dialogue's steps, as far as the socket allows without waiting.</summary>
    private void Run()
    {
        var socket = _socket!;
        while (true)
        {
            switch (_step)
            {
                case BackendStep.Send:
                    var output = _dialogue.Output.WrittenSpan;
                    var sent = socket.TrySend(output[_sent..], out var sendError);
                    if (sent < 0)
                    {
                        Fail(new SocketException((int)sendError));
                        return;
                    }

                    _sent += sent;
                    if (_sent < output.Length)
                    {
                        return; // the socket reports room
                    }

                    _sent = 0;
                    _dialogue.Output.Clear(); // zeroed: it held credentials
                    _step = BackendStep.ReadLine;
                    break;

                case BackendStep.ReadLine:
                    if (HandoverPhases.TryFeed(_reader, _dialogue, _phases, _mechanism) is { } next)
                    {
                        _step = next;
                        break;
                    }

                    var read = socket.TryReceive(_reader.GetReceiveSpace().Span, out var receiveError);
                    if (read > 0)
                    {
                        _reader.Received(read);
                    }
                    else if (read == 0)
                    {
                        _step = _dialogue.OnBroken("backend closed the connection during login");
                    }
                    else if (receiveError == SocketError.WouldBlock)
                    {
                        return; // the socket reports what arrives
                    }
                    else
                    {
                        Fail(new SocketException((int)receiveError));
                        return;
                    }

                    break;

                case BackendStep.Done:
                    Finish();
                    return;

                default:
                    // STARTTLS is the stream path's (a plaintext backend here never asks for it).
                    _dialogue.OnBroken("unexpected TLS step");
                    Finish();
                    return;
            }
        }
    }

    /// <summary>The dialogue is over: the connection goes to the caller on success, and is closed otherwise.</summary>
    private void Finish()
    {
        if (!TryEnd())
        {
            return;
        }

        BackendLoginResult result;
        if (_dialogue.Outcome == BackendLoginOutcome.Success)
        {
            var socket = _socket!;
            socket.SetListener(null);
            var stream = new EpollStream(socket);
            var connection = new BackendConnection(_phases.Endpoint, stream, stream, _reader.Pending.ToArray());
            result = _phases.End(new(BackendLoginOutcome.Success, connection, "") { Capabilities = _dialogue.Capabilities });
        }
        else
        {
            _socket?.Dispose();
            result = _phases.End(new(_dialogue.Outcome, null, _dialogue.Detail) { ErrorType = _dialogue.ErrorType });
        }

        Release();
        _completion.SetResult(result);
    }

    /// <summary>A socket failure: as the stream path classifies it (no connection yet: the backend is suspect).</summary>
    private void Fail(Exception ex)
    {
        if (!TryEnd())
        {
            return;
        }

        _socket?.Dispose();
        var result = _phases.End(ex switch
        {
            // The stream path sees a connected socket's failures as I/O errors (its streams wrap them).
            SocketException socket when _connected => new(BackendLoginOutcome.Unavailable, null, "I/O error: " + socket.SocketErrorCode) { ErrorType = "io" },
            SocketException => new(BackendLoginOutcome.ConnectFailed, null, BackendConnector.Describe(ex)) { ErrorType = "connect" },
            _ => new BackendLoginResult(BackendLoginOutcome.Unavailable, null, "internal error"),
        });
        Release();
        if (ex is SocketException)
        {
            _completion.SetResult(result);
        }
        else
        {
            // Not a connection's failure: a bug, which the session logs as one.
            _completion.SetException(ex);
        }
    }

    private void TimedOut()
    {
        if (!TryEnd())
        {
            return;
        }

        _socket?.Dispose();
        var result = _phases.End(_connected
            ? new(BackendLoginOutcome.Unavailable, null, "login timed out") { ErrorType = "timeout" }
            : new(BackendLoginOutcome.ConnectFailed, null, "connect timed out") { ErrorType = "connect_timeout" });
        Release();
        _completion.SetResult(result);
    }

    private void Cancelled()
    {
        if (!TryEnd())
        {
            return;
        }

        _socket?.Dispose();
        _phases.End(new(BackendLoginOutcome.Unavailable, null, "cancelled"));
        Release();
        _completion.SetException(new OperationCanceledException(_cancellationToken));
    }

    /// <summary>Whether this call ends the hand-over (exactly one does).</summary>
    private bool TryEnd() => Interlocked.Exchange(ref _finished, 1) == 0;

    /// <summary>The timer, the registration and the buffers (zeroed where they held credentials).</summary>
    private void Release()
    {
        _timer?.Dispose();
        _cancellation.Unregister();
        _reader.Dispose();
        _dialogue.Dispose();
    }

    /// <summary>Ends the hand-over (its time limit, the caller's cancellation) on the loop thread, or after its last event.</summary>
    private void EndOnLoop(Action<object?> action) => _loop.ExecuteOrAfterStop(action, this);

    BackendLoginResult IValueTaskSource<BackendLoginResult>.GetResult(short token) => _completion.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<BackendLoginResult>.GetStatus(short token) => _completion.GetStatus(token);

    void IValueTaskSource<BackendLoginResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _completion.OnCompleted(continuation, state, token, flags);
}
#pragma warning restore CA1001
