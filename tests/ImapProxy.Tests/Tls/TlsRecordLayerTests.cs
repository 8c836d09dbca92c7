using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Sockets;
using ImapProxy.Tls;
using Xunit;

namespace ImapProxy.Tests.Tls;

/// <summary>
/// A TLS connection's record layer taken over from the runtime's SslStream, on real loopback connections: the server
/// side's ciphertext is moved by hand between its socket and the layer, the client is a plain SslStream.
/// </summary>
public sealed class TlsRecordLayerTests : IDisposable
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);

    private readonly string _directory = System.IO.Directory.CreateTempSubdirectory("tls-record-layer-").FullName;

    public void Dispose() => System.IO.Directory.Delete(_directory, recursive: true);

    [Fact]
    public async Task TheLayerCarriesBothWays_GivesItsBuffersBack_AndTheStreamWritesOnAfterwards()
    {
        await using var pair = await TlsLoopbackPair.ConnectAsync(TestCertificates.CreateSelfSigned(_directory));
        var layer = TlsRecordLayer.TryTakeOver(pair.Server, out var reason);
        Assert.True(layer is not null, reason);
        try
        {
            // A renegotiation would run on the engine thread in the middle of the splice: refused from now on.
            Assert.NotEqual(0UL, layer.Options & OpenSslNative.SslOpNoRenegotiation);

            // Client to server: ciphertext from the socket, fed in, decrypted.
            var upload = RandomNumberGenerator.GetBytes(100_000);
            var writing = pair.Client.WriteAsync(upload).AsTask();
            var received = await ReceivePlaintextAsync(pair, layer, upload.Length);
            await writing.WaitAsync(s_limit);
            Assert.Equal(upload, received);

            // Server to client: encrypted in, taken out, sent.
            var download = RandomNumberGenerator.GetBytes(70_001);
            Assert.True(layer.Write(download));
            var reading = ReadExactlyAsync(pair.Client, download.Length);
            await SendOutputAsync(pair, layer);
            Assert.Equal(download, await reading.WaitAsync(s_limit));

            // Both buffers grew past the limit and are empty now: trimmed back.
            var (readGrown, writeGrown) = layer.BufferCapacities;
            Assert.True(readGrown > TlsRecordLayer.KeepUpTo && writeGrown > TlsRecordLayer.KeepUpTo, $"{readGrown} {writeGrown}");
            Assert.True(layer.Trim());
            var (read, write) = layer.BufferCapacities;
            Assert.True(read <= TlsRecordLayer.KeepUpTo && write <= TlsRecordLayer.KeepUpTo, $"{read} {write}");

            // Trimmed buffers grow again as needed; a small one stays.
            await pair.Client.WriteAsync("a1 NOOP\r\n"u8.ToArray());
            Assert.Equal("a1 NOOP\r\n"u8.ToArray(), await ReceivePlaintextAsync(pair, layer, 9));
            var small = layer.BufferCapacities.Read;
            Assert.InRange(small, 1, TlsRecordLayer.KeepUpTo);
            Assert.True(layer.Trim());
            Assert.Equal(small, layer.BufferCapacities.Read);
        }
        finally
        {
            layer.Release();
        }

        // The runtime's stream goes on over the same connection (a BYE after a kick).
        await pair.Server.WriteAsync("* BYE\r\n"u8.ToArray());
        Assert.Equal("* BYE\r\n"u8.ToArray(), await ReadExactlyAsync(pair.Client, 7).WaitAsync(s_limit));
    }

    [Fact]
    public async Task AnOwnerThatLetGoOfTheStream_WritesThroughTheLayer_AndCloseFreesTheConnection()
    {
        await using var pair = await TlsLoopbackPair.ConnectAsync(TestCertificates.CreateSelfSigned(_directory));
        var layer = TlsRecordLayer.TryTakeOver(pair.Server, out var reason);
        Assert.True(layer is not null, reason);
        var handle = OpenSslNative.GetSslHandle(pair.Server);
        Assert.NotNull(handle);

        // A BYE after the splice, without the stream: encrypted by the layer, sent on the socket.
        Assert.True(layer.Write("* BYE Session moved, please reconnect.\r\n"u8));
        var reading = ReadExactlyAsync(pair.Client, 40);
        await SendOutputAsync(pair, layer);
        Assert.Equal("* BYE Session moved, please reconnect.\r\n"u8.ToArray(), await reading.WaitAsync(s_limit));

        // Close frees the OpenSSL connection at once (a reference still held would keep it: Release alone does not).
        Assert.False(handle.IsClosed);
        layer.Close();
        Assert.True(handle.IsClosed);

        // The stream, disposed afterwards (or finalized, once let go of), finds nothing left to free.
        await pair.Server.DisposeAsync();
    }

    [Fact]
    public async Task AStreamDisposedWhileTheLayerHoldsItsConnection_LeavesTheConnectionToTheLayer()
    {
        // A stream let go of may be finalized at any time, which disposes its handle: the layer's reference keeps the
        // OpenSSL connection alive until Close.
        await using var pair = await TlsLoopbackPair.ConnectAsync(TestCertificates.CreateSelfSigned(_directory));
        var layer = TlsRecordLayer.TryTakeOver(pair.Server, out var reason);
        Assert.True(layer is not null, reason);
        await pair.Server.DisposeAsync();

        await pair.Client.WriteAsync("a1 NOOP\r\n"u8.ToArray());
        Assert.Equal("a1 NOOP\r\n"u8.ToArray(), await ReceivePlaintextAsync(pair, layer, 9));
        Assert.True(layer.Write("a1 OK NOOP completed\r\n"u8));
        var reading = ReadExactlyAsync(pair.Client, 22);
        await SendOutputAsync(pair, layer);
        Assert.Equal("a1 OK NOOP completed\r\n"u8.ToArray(), await reading.WaitAsync(s_limit));
        layer.Close();
    }

    [Fact]
    public async Task CiphertextNotReadYet_KeepsItsBuffer_AndAPartialRecordMovesIntoOpenSsl()
    {
        await using var pair = await TlsLoopbackPair.ConnectAsync(TestCertificates.CreateSelfSigned(_directory));
        var layer = TlsRecordLayer.TryTakeOver(pair.Server, out var reason);
        Assert.True(layer is not null, reason);
        try
        {
            // One TLS 1.3 record: 5 bytes of header, the plaintext, its content type and a 16-byte tag.
            var plaintext = RandomNumberGenerator.GetBytes(10_000);
            await pair.Client.WriteAsync(plaintext);
            var record = new byte[5 + plaintext.Length + 1 + 16];
            await new NetworkStream(pair.ServerSocket, ownsSocket: false).ReadExactlyAsync(record).AsTask().WaitAsync(s_limit);

            // Fed, not read yet (the splice stops reading while the backend is full): the buffer cannot go.
            Assert.True(layer.Feed(record.AsSpan(0, 5_000)));
            Assert.Equal(5_000, layer.PendingInput);
            Assert.False(layer.Trim());
            Assert.True(layer.BufferCapacities.Read > TlsRecordLayer.KeepUpTo);

            // Read: OpenSSL takes the half record into its own buffer, and the BIO's can go.
            var buffer = new byte[16 * 1024];
            Assert.Equal(0, layer.Read(buffer, out var status));
            Assert.Equal(TlsReadStatus.WantRead, status);
            Assert.Equal(0, layer.PendingInput);
            Assert.True(layer.Trim());
            Assert.True(layer.BufferCapacities.Read <= TlsRecordLayer.KeepUpTo);

            Assert.True(layer.Feed(record.AsSpan(5_000)));
            Assert.Equal(plaintext.Length, layer.Read(buffer, out _));
            Assert.Equal(plaintext, buffer.AsSpan(0, plaintext.Length).ToArray());
        }
        finally
        {
            layer.Release();
        }
    }

    [Fact]
    public async Task ThePeersCloseNotify_IsClosed()
    {
        await using var pair = await TlsLoopbackPair.ConnectAsync(TestCertificates.CreateSelfSigned(_directory));
        var layer = TlsRecordLayer.TryTakeOver(pair.Server, out _)!;
        try
        {
            await pair.Client.ShutdownAsync();
            var buffer = new byte[16 * 1024];
            var status = TlsReadStatus.WantRead;
            while (status == TlsReadStatus.WantRead)
            {
                var n = await pair.ServerSocket.ReceiveAsync(buffer.AsMemory()).AsTask().WaitAsync(s_limit);
                Assert.NotEqual(0, n);
                Assert.True(layer.Feed(buffer.AsSpan(0, n)));
                Assert.Equal(0, layer.Read(buffer, out status));
            }

            Assert.Equal(TlsReadStatus.Closed, status);
        }
        finally
        {
            layer.Release();
        }
    }

    [Fact]
    public async Task GarbageInsteadOfARecord_Fails()
    {
        await using var pair = await TlsLoopbackPair.ConnectAsync(TestCertificates.CreateSelfSigned(_directory));
        var layer = TlsRecordLayer.TryTakeOver(pair.Server, out _)!;
        try
        {
            Assert.True(layer.Feed("\x17\x03\x03\x00\x20 these are not the bytes of a record"u8));
            Assert.Equal(0, layer.Read(new byte[1024], out var status));
            Assert.Equal(TlsReadStatus.Failed, status);
        }
        finally
        {
            layer.Release();
        }
    }

    [Fact]
    public async Task AStreamHoldingReceivedBytes_IsNotTakenOver()
    {
        await using var pair = await TlsLoopbackPair.ConnectAsync(TestCertificates.CreateSelfSigned(_directory));

        // Two records in one go; the stream returns the first and keeps the second in its buffer.
        await pair.Client.WriteAsync("first\r\n"u8.ToArray());
        await pair.Client.WriteAsync("second\r\n"u8.ToArray());
        await LoopbackSockets.WaitForAvailableAsync(pair.ServerSocket, 2 * (5 + 1 + 16) + 15, s_limit); // two TLS 1.3 records: header, type, tag
        var one = new byte[7];
        await pair.Server.ReadExactlyAsync(one).AsTask().WaitAsync(s_limit);

        Assert.NotEqual(0, TlsRecordLayer.BufferedBytes(pair.Server));
        Assert.Null(TlsRecordLayer.TryTakeOver(pair.Server, out var reason));
        Assert.Equal("SslStream holds received bytes", reason);
    }

    private static async Task<byte[]> ReceivePlaintextAsync(TlsLoopbackPair pair, TlsRecordLayer layer, int count)
    {
        var result = new byte[count];
        var buffer = new byte[64 * 1024];
        var total = 0;
        while (total < count)
        {
            var n = await pair.ServerSocket.ReceiveAsync(buffer.AsMemory()).AsTask().WaitAsync(s_limit);
            Assert.NotEqual(0, n);
            Assert.True(layer.Feed(buffer.AsSpan(0, n)));
            int read;
            while ((read = layer.Read(buffer, out var status)) > 0 || status != TlsReadStatus.WantRead)
            {
                Assert.Equal(TlsReadStatus.WantRead, status);
                buffer.AsSpan(0, read).CopyTo(result.AsSpan(total));
                total += read;
            }
        }

        return result;
    }

    private static async Task SendOutputAsync(TlsLoopbackPair pair, TlsRecordLayer layer)
    {
        var buffer = new byte[64 * 1024];
        int taken;
        while ((taken = layer.TakeOutput(buffer)) > 0)
        {
            await pair.ServerSocket.SendAsync(buffer.AsMemory(0, taken));
        }

        Assert.Equal(0, layer.PendingOutput);
    }

    private static async Task<byte[]> ReadExactlyAsync(SslStream stream, int count)
    {
        var buffer = new byte[count];
        await stream.ReadExactlyAsync(buffer);
        return buffer;
    }
}
