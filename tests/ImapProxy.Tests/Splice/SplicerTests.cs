using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Text;
using ImapProxy.Backends;
using ImapProxy.Splice;
using ImapProxy.Telemetry;
using ImapProxy.Testing.Telemetry;
using Xunit;

namespace ImapProxy.Tests.Splice;

/// <summary>
/// The splice between an in-memory client (pipes) and a real loopback backend socket: how each kind of end is
/// reported, and that nothing is left running or waiting.
/// </summary>
public sealed class SplicerTests : IAsyncDisposable
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);

    private readonly TestMeterFactory _meters = new();
    private readonly Pipe _fromClient = new();
    private readonly Pipe _toClient;
    private readonly SpliceControl _control = new();
    private Socket? _peer;
    private BackendConnection? _backend;

    public SplicerTests()
    {
        // A small window, so a client that does not read blocks the backend-to-client flush quickly.
        _toClient = new Pipe(new PipeOptions(pauseWriterThreshold: 64 * 1024, resumeWriterThreshold: 32 * 1024));
    }

    public async ValueTask DisposeAsync()
    {
        if (_backend is not null)
        {
            await _backend.DisposeAsync();
        }

        _peer?.Dispose();
        _meters.Dispose();
    }

    [Fact]
    public async Task BytesFlowBothWays_AndTheClientsCloseEndsIt()
    {
        var splice = await StartAsync();

        await _fromClient.Writer.WriteAsync("a1 NOOP\r\n"u8.ToArray());
        Assert.Equal("a1 NOOP\r\n", await ReceiveAtPeerAsync(9));
        await _peer!.SendAsync("a1 OK NOOP completed.\r\n"u8.ToArray());
        Assert.Equal("a1 OK NOOP completed.\r\n", await ReadClientAsync(23));

        await _fromClient.Writer.CompleteAsync();
        var result = await splice.WaitAsync(s_limit);

        Assert.Equal(SpliceOutcome.ClientClosed, result.Outcome);
        Assert.Equal(9, result.BytesFromClient);
        Assert.Equal(23, result.BytesFromBackend);
        Assert.True(result.AtResponseBoundary);
        Assert.Equal(0, await _peer.ReceiveAsync(new byte[1])); // the backend connection was shut down
        Assert.False(_control.StopRequested);
        Assert.False(_control.FlushToken.IsCancellationRequested);
    }

    [Fact]
    public async Task BackendClose_EndsItWithoutTheClientDoingAnything()
    {
        var splice = await StartAsync();

        await _peer!.SendAsync("* BYE Logging out\r\n"u8.ToArray());
        _peer.Shutdown(SocketShutdown.Send);
        var result = await splice.WaitAsync(s_limit);

        Assert.Equal(SpliceOutcome.BackendClosed, result.Outcome);
        Assert.True(result.BackendSaidBye);
        Assert.Equal("* BYE Logging out\r\n", await ReadClientAsync(19));
    }

    [Fact]
    public async Task Kick_EndsAnIdleSessionAsCancelledAtAResponseBoundary()
    {
        var splice = await StartAsync();
        await _fromClient.Writer.WriteAsync("a2 IDLE\r\n"u8.ToArray());
        Assert.Equal("a2 IDLE\r\n", await ReceiveAtPeerAsync(9));
        await _peer!.SendAsync("+ idling\r\n"u8.ToArray());
        Assert.Equal("+ idling\r\n", await ReadClientAsync(10));

        _control.RequestStop();
        var result = await splice.WaitAsync(s_limit);

        Assert.Equal(SpliceOutcome.Cancelled, result.Outcome);
        Assert.True(result.AtResponseBoundary);
        Assert.False(result.BackendSaidBye);
    }

    [Fact]
    public async Task Kick_EndsASpliceStuckOnAClientThatDoesNotRead()
    {
        var splice = await StartAsync();
        var literal = new byte[1024 * 1024];
        var sending = _peer!.SendAsync(literal); // far more than the client window: the splice's flush blocks
        var buffered = await _toClient.Reader.ReadAtLeastAsync(64 * 1024).AsTask().WaitAsync(s_limit);
        _toClient.Reader.AdvanceTo(buffered.Buffer.Start, buffered.Buffer.End); // looked at, nothing consumed

        _control.RequestStop();
        var result = await splice.WaitAsync(s_limit);

        Assert.Equal(SpliceOutcome.Cancelled, result.Outcome);
        Assert.False(result.AtResponseBoundary); // inside the literal: no BYE may follow
        Assert.True(_control.FlushToken.IsCancellationRequested);
        await sending.WaitAsync(s_limit); // loopback buffers take the rest
        var drained = new byte[64 * 1024];
        while (await _peer.ReceiveAsync(drained).WaitAsync(s_limit) != 0)
        {
            // The proxy shut its side down: the backend reads to the end of the stream.
        }
    }

    [Fact]
    public async Task BytesReadDuringTheHandoverReachTheClientFirst()
    {
        var splice = await StartAsync(leftover: "* 3 EXISTS\r\n"u8.ToArray());

        Assert.Equal("* 3 EXISTS\r\n", await ReadClientAsync(12));
        await _fromClient.Writer.CompleteAsync();
        var result = await splice.WaitAsync(s_limit);
        Assert.Equal(12, result.BytesFromBackend);
    }

    private async Task<Task<SpliceResult>> StartAsync(byte[]? leftover = null)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(listener.LocalEndPoint!);
        _peer = await listener.AcceptAsync();
        var stream = new NetworkStream(socket, ownsSocket: false);
        var input = PipeReader.Create(stream, new StreamPipeReaderOptions(leaveOpen: true));
        if (leftover is not null)
        {
            // What the hand-over leaves behind: bytes after the login OK, read but not consumed.
            await _peer.SendAsync(leftover);
            var read = await input.ReadAtLeastAsync(leftover.Length).AsTask().WaitAsync(s_limit);
            input.AdvanceTo(read.Buffer.Start); // as the hand-over leaves it: consumed up to the OK line, nothing after examined
        }

        _backend = new BackendConnection(new BackendEndpoint("b1", "127.0.0.1", 143, 1), socket, stream, input, []);
        return Splicer.RunAsync(_fromClient.Reader, _toClient.Writer, _backend, new ImapProxyMetrics(_meters), _control);
    }

    private async Task<string> ReceiveAtPeerAsync(int count)
    {
        var buffer = new byte[count];
        var received = 0;
        while (received < count)
        {
            var n = await _peer!.ReceiveAsync(buffer.AsMemory(received)).AsTask().WaitAsync(s_limit);
            Assert.NotEqual(0, n);
            received += n;
        }

        return Encoding.ASCII.GetString(buffer);
    }

    private async Task<string> ReadClientAsync(int count)
    {
        var result = await _toClient.Reader.ReadAtLeastAsync(count).AsTask().WaitAsync(s_limit);
        var text = Encoding.ASCII.GetString(result.Buffer.Slice(0, count).ToArray());
        _toClient.Reader.AdvanceTo(result.Buffer.GetPosition(count));
        return text;
    }
}
