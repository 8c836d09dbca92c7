using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;

namespace ImapProxy.Bench;

/// <summary>How a response ended.</summary>
internal enum Reply
{
    /// <summary>The scanner needs more bytes (internal to the scanner).</summary>
    NeedMore,

    /// <summary>A tagged <c>OK</c> (or the <c>* OK</c> greeting).</summary>
    Ok,

    /// <summary>A tagged <c>NO</c> or <c>BAD</c> (or a greeting other than <c>* OK</c>).</summary>
    Failed,

    /// <summary>A <c>+</c> continuation request, when the caller asked to stop at one.</summary>
    Continuation,

    /// <summary>The server closed the connection first.</summary>
    Closed,
}

/// <summary>
/// One client connection: a socket, an optional <see cref="SslStream"/>, and a caller-owned buffer scanned by a
/// tiny response reader. It reads CRLF-terminated lines, skips (and counts) the bytes a trailing <c>{n}</c>
/// announces, and stops at the line that starts with the command's one-letter tag. Deadlines are enforced by
/// <see cref="Watchdog"/>, which closes the socket under a stalled read so no await needs a token.
/// </summary>
internal sealed class ImapConnection : IDisposable
{
    private const byte Cr = (byte)'\r';
    private const byte Lf = (byte)'\n';
    private const byte Space = (byte)' ';
    private const byte Plus = (byte)'+';
    private const byte OpenBrace = (byte)'{';
    private const byte CloseBrace = (byte)'}';

    // Kept when a line outgrows the buffer: enough for the longest literal announcement, "{9223372036854775807+}".
    private const int TailKeep = 32;

    private readonly Socket _socket;
    private readonly byte[] _buffer;
    private Stream? _stream;
    private int _start;
    private int _end;
    private long _literalRemaining;
    private LineKind _pendingKind;
    private long _literalBytes;
    private long _deadline = long.MaxValue;
    private int _timedOut;

    private enum LineKind
    {
        None,
        Untagged,
        Continuation,
        TaggedOk,
        TaggedFailed,
    }

    private ImapConnection(Socket socket, byte[] buffer)
    {
        _socket = socket;
        _buffer = buffer;
    }

    /// <summary>The last tagged NO/BAD (or failed greeting) line, for error messages; set only on failure.</summary>
    public string? LastFailure { get; private set; }

    /// <summary>True once the watchdog has aborted this connection for missing its deadline.</summary>
    public bool TimedOut => Volatile.Read(ref _timedOut) != 0;

    /// <summary>
    /// Connects, completes the TLS handshake when <paramref name="tls"/> is set, and reads the greeting.
    /// <paramref name="buffer"/> is the caller's and may be reused for the next connection once this one is disposed.
    /// </summary>
    public static async Task<ImapConnection> OpenAsync(
        EndPoint endPoint, SslClientAuthenticationOptions? tls, byte[] buffer, Watchdog watchdog, int slot, long timeoutTicks)
    {
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        var connection = new ImapConnection(socket, buffer);
        watchdog.Watch(slot, connection);
        try
        {
            connection.Arm(timeoutTicks);
            await socket.ConnectAsync(endPoint).ConfigureAwait(false);
            var network = new NetworkStream(socket, ownsSocket: true);
            connection._stream = network;
            if (tls is not null)
            {
                var ssl = new SslStream(network, leaveInnerStreamOpen: false);
                connection._stream = ssl;
                await ssl.AuthenticateAsClientAsync(tls).ConfigureAwait(false);
            }

            Reply greeting = await connection.ReadReplyAsync((byte)'*').ConfigureAwait(false);
            connection.Disarm();
            if (greeting != Reply.Ok)
            {
                throw new BenchException($"greeting: {connection.Describe(greeting)}");
            }

            return connection;
        }
        catch (Exception ex)
        {
            connection.Dispose();
            if (connection.TimedOut)
            {
                throw new BenchException("connect, TLS handshake or greeting timed out", ex);
            }

            throw;
        }
    }

    /// <summary>Sends a pre-encoded command and reads through its tagged completion, within the deadline.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<Reply> CommandAsync(ReadOnlyMemory<byte> command, byte tag, long timeoutTicks, bool stopAtContinuation = false)
    {
        Arm(timeoutTicks);
        await _stream!.WriteAsync(command).ConfigureAwait(false);
        Reply reply = await ReadReplyAsync(tag, stopAtContinuation).ConfigureAwait(false);
        Disarm();
        return reply;
    }

    /// <summary>As <see cref="CommandAsync"/>, collecting the untagged lines as text (set-up only; allocates).</summary>
    public async Task<Reply> CommandCollectingAsync(ReadOnlyMemory<byte> command, byte tag, long timeoutTicks, List<string> untagged)
    {
        Arm(timeoutTicks);
        await _stream!.WriteAsync(command).ConfigureAwait(false);
        Reply reply;
        while ((reply = Scan(tag, stopAtContinuation: false, untagged)) == Reply.NeedMore)
        {
            if (!await FillAsync().ConfigureAwait(false))
            {
                reply = Reply.Closed;
                break;
            }
        }

        Disarm();
        return reply;
    }

    /// <summary>A reply for an error message: the server's words when it said NO or BAD.</summary>
    public string Describe(Reply reply) => reply == Reply.Failed && LastFailure is not null ? LastFailure : reply.ToString();

    /// <summary>Returns the literal bytes received since the last call and restarts the count.</summary>
    public long TakeLiteralBytes()
    {
        long bytes = _literalBytes;
        _literalBytes = 0;
        return bytes;
    }

    /// <summary>Called by the watchdog: true when an operation has outlived its deadline.</summary>
    public bool IsOverdue(long now) => now > Volatile.Read(ref _deadline);

    /// <summary>Called by the watchdog: closes the socket, which fails whatever read, write or handshake is pending.</summary>
    public void Abort()
    {
        Volatile.Write(ref _timedOut, 1);
        _socket.Dispose();
    }

    public void Dispose()
    {
        if (_stream is not null)
        {
            _stream.Dispose();
        }
        else
        {
            _socket.Dispose();
        }
    }

    // Pooled builder: the state machine box is reused when the read completes asynchronously, so a steady-state
    // NOOP loop allocates nothing per command.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<Reply> ReadReplyAsync(byte tag, bool stopAtContinuation = false)
    {
        Reply reply;
        while ((reply = Scan(tag, stopAtContinuation, untagged: null)) == Reply.NeedMore)
        {
            if (!await FillAsync().ConfigureAwait(false))
            {
                return Reply.Closed;
            }
        }

        return reply;
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> FillAsync()
    {
        if (_start == _end)
        {
            _start = 0;
            _end = 0;
        }
        else if (_end == _buffer.Length)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }

        int read = await _stream!.ReadAsync(_buffer.AsMemory(_end)).ConfigureAwait(false);
        _end += read;
        return read > 0;
    }

    private void Arm(long timeoutTicks) => Volatile.Write(ref _deadline, Stopwatch.GetTimestamp() + timeoutTicks);

    private void Disarm() => Volatile.Write(ref _deadline, long.MaxValue);

    /// <summary>Consumes buffered lines until the response ends or the buffer runs dry.</summary>
    private Reply Scan(byte tag, bool stopAtContinuation, List<string>? untagged)
    {
        while (true)
        {
            if (_literalRemaining > 0)
            {
                int skip = (int)Math.Min(_literalRemaining, _end - _start);
                _start += skip;
                _literalRemaining -= skip;
                _literalBytes += skip;
                if (_literalRemaining > 0)
                {
                    return Reply.NeedMore;
                }
            }

            ReadOnlySpan<byte> available = _buffer.AsSpan(_start, _end - _start);
            int lf = available.IndexOf(Lf);
            if (lf < 0)
            {
                if (available.Length == _buffer.Length)
                {
                    // A line longer than the buffer: classify it by its start, keep only its tail (where a literal
                    // announcement would be), and drop the middle.
                    if (_pendingKind == LineKind.None)
                    {
                        _pendingKind = Classify(available, tag);
                    }

                    available[^TailKeep..].CopyTo(_buffer);
                    _start = 0;
                    _end = TailKeep;
                }

                return Reply.NeedMore;
            }

            ReadOnlySpan<byte> line = available[..lf];
            if (!line.IsEmpty && line[^1] == Cr)
            {
                line = line[..^1];
            }

            LineKind kind = _pendingKind != LineKind.None ? _pendingKind : Classify(line, tag);
            _pendingKind = LineKind.None;
            _start += lf + 1;

            if (kind == LineKind.TaggedFailed)
            {
                LastFailure = Encoding.ASCII.GetString(line[..Math.Min(line.Length, 200)]);
            }

            if (untagged is not null && kind == LineKind.Untagged)
            {
                untagged.Add(Encoding.ASCII.GetString(line));
            }

            if (TryParseLiteral(line, out long literal))
            {
                // The response goes on after the literal; what follows it is not the start of a line.
                _literalRemaining = literal;
                _pendingKind = LineKind.Untagged;
                continue;
            }

            switch (kind)
            {
                case LineKind.TaggedOk:
                    return Reply.Ok;
                case LineKind.TaggedFailed:
                    return Reply.Failed;
                case LineKind.Continuation when stopAtContinuation:
                    return Reply.Continuation;
                default:
                    continue;
            }
        }
    }

    private static LineKind Classify(ReadOnlySpan<byte> line, byte tag)
    {
        if (line.Length >= 2 && line[0] == tag && line[1] == Space)
        {
            return line[2..].StartsWith("OK"u8) ? LineKind.TaggedOk : LineKind.TaggedFailed;
        }

        return !line.IsEmpty && line[0] == Plus ? LineKind.Continuation : LineKind.Untagged;
    }

    /// <summary>Recognises a line ending in <c>{n}</c> (or <c>{n+}</c>).</summary>
    private static bool TryParseLiteral(ReadOnlySpan<byte> line, out long length)
    {
        length = 0;
        if (line.IsEmpty || line[^1] != CloseBrace)
        {
            return false;
        }

        int end = line.Length - 1;
        if (end > 0 && line[end - 1] == Plus)
        {
            end--;
        }

        int open = line[..end].LastIndexOf(OpenBrace);
        if (open < 0 || open == end - 1 || end - open > 19)
        {
            return false;
        }

        long value = 0;
        foreach (byte b in line[(open + 1)..end])
        {
            if (b is < (byte)'0' or > (byte)'9')
            {
                return false;
            }

            value = (value * 10) + (b - '0');
        }

        length = value;
        return true;
    }
}

/// <summary>A protocol-level failure during set-up or a cycle, with a message for stderr.</summary>
internal sealed class BenchException : Exception
{
    public BenchException()
    {
    }

    public BenchException(string message)
        : base(message)
    {
    }

    public BenchException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
