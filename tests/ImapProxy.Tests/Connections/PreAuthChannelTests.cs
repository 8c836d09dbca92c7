using System.Buffers;
using System.Net.Sockets;
using System.Text;
using ImapProxy.Connections;
using ImapProxy.Testing.Sockets;
using Xunit;

namespace ImapProxy.Tests.Connections;

/// <summary>The pre-auth dialogue's I/O over a real loopback connection.</summary>
public sealed class PreAuthChannelTests
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task ReadAhead_ComesFirst_ThenWhatArrives_AndWhatIsLeftIsTakenOut()
    {
        var (client, server) = await LoopbackSockets.ConnectPairAsync();
        using var _ = client;
        await using var stream = new NetworkStream(server, ownsSocket: true);
        using var channel = new PreAuthChannel(stream, "a CAPA"u8);

        Assert.Equal("a CAPA", Text(channel.Buffered));
        await client.SendAsync("BILITY\r\nb NOOP\r\n"u8.ToArray());
        while (!Text(channel.Buffered).EndsWith('\n'))
        {
            Assert.True(await channel.ReadAsync(CancellationToken.None).AsTask().WaitAsync(s_limit));
        }

        channel.Consume("a CAPABILITY\r\n".Length);
        Assert.Equal("b NOOP\r\n", Encoding.ASCII.GetString(channel.TakeBuffered()));
        Assert.True(channel.Buffered.IsEmpty);
    }

    [Fact]
    public async Task Answers_AreSentOnFlush_AndTheClientsEnd_IsReported()
    {
        var (client, server) = await LoopbackSockets.ConnectPairAsync();
        using var _ = client;
        await using var stream = new NetworkStream(server, ownsSocket: true);
        using var channel = new PreAuthChannel(stream);

        channel.Output.Write("* OK ready\r\n"u8);
        Assert.Equal(0, client.Available);
        await channel.FlushAsync(CancellationToken.None).AsTask().WaitAsync(s_limit);
        Assert.Equal(0, channel.Output.WrittenCount);
        var greeting = new byte[12];
        await client.ReceiveAsync(greeting).WaitAsync(s_limit);
        Assert.Equal("* OK ready\r\n", Encoding.ASCII.GetString(greeting));

        client.Shutdown(SocketShutdown.Send);
        Assert.False(await channel.ReadAsync(CancellationToken.None).AsTask().WaitAsync(s_limit));
        Assert.True(channel.Ended);
        Assert.False(await channel.ReadAsync(CancellationToken.None).AsTask().WaitAsync(s_limit));
    }

    private static string Text(ReadOnlySequence<byte> bytes) => Encoding.ASCII.GetString(bytes.ToArray());
}
