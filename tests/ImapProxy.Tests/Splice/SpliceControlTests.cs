using System.Net;
using System.Net.Sockets;
using ImapProxy.Backends;
using ImapProxy.Connections.Transport;
using ImapProxy.Splice;
using ImapProxy.Testing.Sockets;
using Xunit;

namespace ImapProxy.Tests.Splice;

/// <summary>Stops requested before, after and concurrently with the splice's start, on real loopback sockets.</summary>
public sealed class SpliceControlTests
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task StopRequestedBeforeAttach_TakesEffectAtAttach()
    {
        await using var sockets = await SessionSockets.ConnectAsync();
        var control = new SpliceControl();

        control.RequestStop();
        Assert.True(control.StopRequested);
        var read = sockets.ClientSide.ReceiveAsync(Memory<byte>.Empty).AsTask();
        Assert.False(read.IsCompleted);

        control.Attach(sockets.ClientControl, sockets.Backend);

        Assert.Equal(0, await read.WaitAsync(s_limit)); // the client read ended
        Assert.Equal(0, await sockets.BackendPeer.ReceiveAsync(new byte[1]).WaitAsync(s_limit)); // the backend side was shut down
        Assert.False(control.TryBeginClientWrite()); // nothing more goes to the client from the splice
    }

    [Fact]
    public async Task InternalStop_EndsBothReadsButIsNoStopRequest_AndTheClientCanStillBeWrittenTo()
    {
        await using var sockets = await SessionSockets.ConnectAsync();
        var control = new SpliceControl();
        control.Attach(sockets.ClientControl, sockets.Backend);

        control.Stop();
        control.Stop();

        Assert.Equal(0, await sockets.ClientSide.ReceiveAsync(new byte[1]).WaitAsync(s_limit));
        Assert.Equal(0, await sockets.BackendPeer.ReceiveAsync(new byte[1]).WaitAsync(s_limit));
        Assert.False(control.StopRequested);
        Assert.True(control.TryBeginClientWrite()); // the rest of a response may still reach the client
        control.EndClientWrite();

        // A kick arriving after the splice ended, with no write under way, leaves the client writable (the BYE).
        control.RequestStop();
        Assert.True(control.StopRequested);
        await sockets.ClientSide.SendAsync("* BYE\r\n"u8.ToArray());
        var bye = new byte[7];
        Assert.Equal(7, await sockets.Client.ReceiveAsync(bye).WaitAsync(s_limit));
    }

    [Fact]
    public async Task StopRequestedDuringAClientWrite_ShutsTheClientDownAltogether()
    {
        await using var sockets = await SessionSockets.ConnectAsync();
        var control = new SpliceControl();
        control.Attach(sockets.ClientControl, sockets.Backend);
        Assert.True(control.TryBeginClientWrite());

        control.RequestStop();

        // The write under way may be stuck on a client that does not read: the client side was closed for sending too.
        Assert.Equal(0, await sockets.Client.ReceiveAsync(new byte[1]).WaitAsync(s_limit));
        Assert.Throws<SocketException>(() => sockets.ClientSide.Send("x"u8));
    }

    [Fact]
    public async Task RequestStopRacingAttach_AlwaysStops()
    {
        for (var i = 0; i < 200; i++)
        {
            await using var sockets = await SessionSockets.ConnectAsync();
            var control = new SpliceControl();
            using var start = new Barrier(2);
            var kicker = Task.Run(() =>
            {
                start.SignalAndWait();
                control.RequestStop();
            });
            var attacher = Task.Run(() =>
            {
                start.SignalAndWait();
                control.Attach(sockets.ClientControl, sockets.Backend);
            });
            await Task.WhenAll(kicker, attacher);

            Assert.Equal(0, await sockets.ClientSide.ReceiveAsync(new byte[1]).WaitAsync(s_limit));
            Assert.Equal(0, await sockets.BackendPeer.ReceiveAsync(new byte[1]).WaitAsync(s_limit));
        }
    }

    [Fact]
    public async Task RequestStopRacingAClientWrite_EitherRefusesTheWriteOrClosesTheClient()
    {
        for (var i = 0; i < 200; i++)
        {
            await using var sockets = await SessionSockets.ConnectAsync();
            var control = new SpliceControl();
            control.Attach(sockets.ClientControl, sockets.Backend);
            using var start = new Barrier(2);
            var kicker = Task.Run(() =>
            {
                start.SignalAndWait();
                control.RequestStop();
            });
            var writer = Task.Run(() =>
            {
                start.SignalAndWait();
                return control.TryBeginClientWrite();
            });
            await kicker;
            if (await writer)
            {
                // The write began before the request was seen: the kick must have closed the client for sending.
                Assert.Equal(0, await sockets.Client.ReceiveAsync(new byte[1]).WaitAsync(s_limit));
            }
        }
    }

    /// <summary>
    /// The two connections of a spliced session: the client's (<paramref name="ClientSide"/> is the proxy's socket,
    /// <paramref name="Client"/> the client's end) and the backend's (<paramref name="Backend"/>, whose far end is
    /// <paramref name="BackendPeer"/>). The control shuts the client side down through its stream, as the proxy's do.
    /// </summary>
    private sealed record SessionSockets(Socket ClientSide, Socket Client, BackendConnection Backend, Socket BackendPeer) : IAsyncDisposable
    {
        public SocketStream ClientControl { get; } = new SocketStream(ClientSide);

        public static async Task<SessionSockets> ConnectAsync()
        {
            var (client, clientSide) = await LoopbackSockets.ConnectPairAsync();
            var (socket, peer) = await LoopbackSockets.ConnectPairAsync();
            var stream = new SocketStream(socket);
            var connection = new BackendConnection(
                new BackendEndpoint("b1", "127.0.0.1", ((IPEndPoint)peer.LocalEndPoint!).Port, 1),
                stream,
                stream,
                []);
            return new SessionSockets(clientSide, client, connection, peer);
        }

        public async ValueTask DisposeAsync()
        {
            await Backend.DisposeAsync();
            BackendPeer.Dispose();
            ClientControl.Dispose(); // and the socket under it
            Client.Dispose();
        }
    }
}
