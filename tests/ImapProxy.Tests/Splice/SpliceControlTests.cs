using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using ImapProxy.Backends;
using ImapProxy.Splice;
using ImapProxy.Testing.Sockets;
using Xunit;

namespace ImapProxy.Tests.Splice;

/// <summary>Stops requested before, after and concurrently with the splice's start, on real loopback sockets.</summary>
public sealed class SpliceControlTests
{
    [Fact]
    public async Task StopRequestedBeforeAttach_TakesEffectAtAttach()
    {
        await using var backend = await BackendPair.ConnectAsync();
        var client = new Pipe();
        var control = new SpliceControl();

        control.RequestStop();
        Assert.True(control.StopRequested);
        Assert.True(control.FlushToken.IsCancellationRequested);
        var read = client.Reader.ReadAsync();
        Assert.False(read.IsCompleted);

        control.Attach(client.Reader, backend.Connection);

        Assert.True((await read).IsCanceled);
        Assert.Equal(0, await backend.Peer.ReceiveAsync(new byte[1])); // the backend side was shut down
    }

    [Fact]
    public async Task InternalStop_EndsBothSidesButIsNoStopRequest()
    {
        await using var backend = await BackendPair.ConnectAsync();
        var client = new Pipe();
        var control = new SpliceControl();
        control.Attach(client.Reader, backend.Connection);

        control.Stop();
        control.Stop();

        Assert.True((await client.Reader.ReadAsync()).IsCanceled);
        Assert.Equal(0, await backend.Peer.ReceiveAsync(new byte[1]));
        Assert.False(control.StopRequested);
        Assert.False(control.FlushToken.IsCancellationRequested);

        // A kick arriving after the splice ended touches nothing: the next read is not cancelled again.
        control.RequestStop();
        Assert.True(control.StopRequested);
        await client.Writer.WriteAsync("x"u8.ToArray());
        var next = await client.Reader.ReadAsync();
        Assert.False(next.IsCanceled);
        Assert.Equal(1, next.Buffer.Length);
    }

    [Fact]
    public async Task RequestStopRacingAttach_AlwaysStops()
    {
        for (var i = 0; i < 200; i++)
        {
            await using var backend = await BackendPair.ConnectAsync();
            var client = new Pipe();
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
                control.Attach(client.Reader, backend.Connection);
            });
            await Task.WhenAll(kicker, attacher);

            Assert.True((await client.Reader.ReadAsync()).IsCanceled, $"iteration {i}: the client read was not cancelled");
            Assert.Equal(0, await backend.Peer.ReceiveAsync(new byte[1]));
        }
    }

    /// <summary>A backend connection as the splice gets it, and the backend's end of it (<paramref name="Peer"/>).</summary>
    private sealed record BackendPair(BackendConnection Connection, Socket Peer) : IAsyncDisposable
    {
        public static async Task<BackendPair> ConnectAsync()
        {
            var (socket, peer) = await LoopbackSockets.ConnectPairAsync();
            var stream = new NetworkStream(socket, ownsSocket: false);
            var connection = new BackendConnection(
                new BackendEndpoint("b1", "127.0.0.1", ((IPEndPoint)peer.LocalEndPoint!).Port, 1),
                socket,
                stream,
                PipeReader.Create(stream, new StreamPipeReaderOptions(leaveOpen: true)),
                []);
            return new BackendPair(connection, peer);
        }

        public async ValueTask DisposeAsync()
        {
            await Connection.DisposeAsync();
            Peer.Dispose();
        }
    }
}
