using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Sockets;
using ImapProxy.Tls;
using Xunit;

namespace ImapProxy.Tests.Tls;

/// <summary>
/// The proxy's own TLS server connections (<see cref="TlsServerContext"/>, <see cref="TlsServerStream"/>) on real
/// loopback sockets, against the runtime's SslStream as the client.
/// </summary>
public sealed class TlsServerStreamTests : IDisposable
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);

    private readonly string _directory = System.IO.Directory.CreateTempSubdirectory("tls-server-stream-").FullName;
    private readonly TestCertificate _certificate;
    private readonly TlsServerContext _context;

    public TlsServerStreamTests()
    {
        _certificate = TestCertificates.CreateSelfSigned(_directory);
        _context = TlsServerContext.Create(_certificate.CertificatePath, _certificate.KeyPath, releaseBuffers: true);
    }

    public void Dispose()
    {
        _context.Dispose();
        System.IO.Directory.Delete(_directory, recursive: true);
    }

    [Theory]
    [InlineData(SslProtocols.Tls13, "TLSv1.3")]
    [InlineData(SslProtocols.Tls12, "TLSv1.2")]
    public async Task TheHandshake_ThenDataBothWays(SslProtocols protocol, string expected)
    {
        await using var pair = await ConnectAsync(ClientOptions(protocol));
        Assert.Equal(expected, pair.Server.Protocol);
        Assert.Equal(protocol, pair.Client.SslProtocol);

        var upload = RandomNumberGenerator.GetBytes(100_000);
        var writing = pair.Client.WriteAsync(upload).AsTask();
        Assert.Equal(upload, await ReadExactlyAsync(pair.Server, upload.Length));
        await writing.WaitAsync(s_limit);

        var download = RandomNumberGenerator.GetBytes(150_001);
        var reading = ReadExactlyAsync(pair.Client, download.Length);
        await pair.Server.WriteAsync(download).AsTask().WaitAsync(s_limit);
        Assert.Equal(download, await reading);
    }

    [Theory]
    [InlineData(SslProtocols.Tls13)]
    [InlineData(SslProtocols.Tls12)]
    public async Task AClientComingBack_ResumesItsSession(SslProtocols protocol)
    {
        // One options instance: the runtime's client keeps its sessions per target host and options.
        var options = ClientOptions(protocol);
        await using (var first = await ConnectAsync(options))
        {
            Assert.False(first.Server.IsResumed);

            // TLS 1.3 tickets come after the handshake: the client takes them in with its first read.
            await first.Server.WriteAsync("* OK\r\n"u8.ToArray());
            Assert.Equal("* OK\r\n"u8.ToArray(), await ReadExactlyAsync(first.Client, 6));
        }

        await using var second = await ConnectAsync(options);
        Assert.True(second.Server.IsResumed);
        await second.Client.WriteAsync("a NOOP\r\n"u8.ToArray());
        Assert.Equal("a NOOP\r\n"u8.ToArray(), await ReadExactlyAsync(second.Server, 8));
    }

    [Fact]
    public async Task TheSessionTickets_WaitForTheFirstWrite_OrGoOutBeforeAReadWaits()
    {
        // TLS 1.3: the handshake's last step makes the tickets; they go out with the greeting (implicit TLS).
        await using (var greeted = await ConnectAsync(ClientOptions(SslProtocols.Tls13)))
        {
            Assert.Equal(0, greeted.ClientSocket.Available);
            await greeted.Server.WriteAsync("* OK ready\r\n"u8.ToArray());
            Assert.Equal("* OK ready\r\n"u8.ToArray(), await ReadExactlyAsync(greeted.Client, 12));
        }

        // After STARTTLS the client speaks first: the tickets go before the server waits for it.
        await using var waiting = await ConnectAsync(ClientOptions(SslProtocols.Tls13));
        var read = waiting.Server.ReadAsync(Memory<byte>.Empty).AsTask();
        await LoopbackSockets.WaitForAvailableAsync(waiting.ClientSocket, 1, s_limit);
        Assert.False(read.IsCompleted);
        await waiting.Client.WriteAsync("a CAPABILITY\r\n"u8.ToArray());
        Assert.Equal(0, await read.WaitAsync(s_limit));
        Assert.Equal("a CAPABILITY\r\n"u8.ToArray(), await ReadExactlyAsync(waiting.Server, 14));
    }

    [Fact]
    public async Task WhatTheClientSendsBehindARecordRead_WaitsInTheLayer_ForWhoeverTakesItOver()
    {
        await using var pair = await ConnectAsync(ClientOptions(SslProtocols.Tls13));

        // Two records in one read of the socket: the reader asks for the first only, the second stays in OpenSSL.
        await pair.Client.WriteAsync("a LOGIN u p\r\n"u8.ToArray());
        await pair.Client.WriteAsync("b SELECT INBOX\r\n"u8.ToArray());
        await LoopbackSockets.WaitForAvailableAsync(pair.ServerSocket, 2 * (5 + 13 + 17), s_limit);
        Assert.Equal("a LOGIN u p\r\n"u8.ToArray(), await ReadExactlyAsync(pair.Server, 13));

        var layer = pair.Server.DetachLayer();
        try
        {
            Assert.True(layer.HasPendingInput);
            var plaintext = new byte[64];
            var read = layer.Read(plaintext, out _);
            Assert.Equal("b SELECT INBOX\r\n"u8.ToArray(), plaintext.AsSpan(0, read).ToArray());
            Assert.False(layer.HasPendingInput);

            // The stream no longer touches the connection; the layer writes on and frees it.
            await Assert.ThrowsAsync<ObjectDisposedException>(async () => _ = await pair.Server.ReadAsync(new byte[1]));
            await pair.Server.DisposeAsync();
            Assert.True(layer.Write("* BYE\r\n"u8));
            var ciphertext = new byte[1024];
            var taken = layer.TakeOutput(ciphertext);
            var reading = ReadExactlyAsync(pair.Client, 7);
            await pair.ServerSocket.SendAsync(ciphertext.AsMemory(0, taken));
            Assert.Equal("* BYE\r\n"u8.ToArray(), await reading);
        }
        finally
        {
            layer.Close();
        }
    }

    [Fact]
    public async Task OneReadAndOneWriteAtOnce_KeepBothDirectionsIntact()
    {
        // A splice's two copy loops (the .NET socket engine, a TLS backend) read and write the stream at the same time.
        await using var pair = await ConnectAsync(ClientOptions(SslProtocols.Tls13));
        var up = RandomNumberGenerator.GetBytes(1_000_000);
        var down = RandomNumberGenerator.GetBytes(1_000_000);

        var clientWrites = Task.Run(async () =>
        {
            for (var offset = 0; offset < up.Length; offset += 7_000)
            {
                await pair.Client.WriteAsync(up.AsMemory(offset, Math.Min(7_000, up.Length - offset)));
            }
        });
        var serverWrites = Task.Run(async () =>
        {
            for (var offset = 0; offset < down.Length; offset += 9_000)
            {
                await pair.Server.WriteAsync(down.AsMemory(offset, Math.Min(9_000, down.Length - offset)));
            }
        });
        var serverReads = ReadExactlyAsync(pair.Server, up.Length);
        var clientReads = ReadExactlyAsync(pair.Client, down.Length);

        await Task.WhenAll(clientWrites, serverWrites).WaitAsync(s_limit);
        Assert.Equal(up, await serverReads);
        Assert.Equal(down, await clientReads);
    }

    [Fact]
    public async Task AReadGoesOn_WhileAWriteWaitsForAClientThatIsNotReading()
    {
        // The copy loops: the backend's answers pile up toward a client that only uploads, as one does before it
        // reads the answer to its APPEND. Small socket buffers make the writes wait for the client early on.
        await using var pair = await ConnectAsync(
            ClientOptions(SslProtocols.Tls13),
            client => client.ReceiveBufferSize = 16 * 1024,
            server => server.SendBufferSize = 16 * 1024);
        var down = RandomNumberGenerator.GetBytes(2_000_000);
        var up = RandomNumberGenerator.GetBytes(1_000_000);

        // Writes of 200 KB: each leaves records in OpenSSL while its first part waits in the socket.
        var serverWrites = Task.Run(async () =>
        {
            for (var offset = 0; offset < down.Length; offset += 200_000)
            {
                await pair.Server.WriteAsync(down.AsMemory(offset, Math.Min(200_000, down.Length - offset)));
            }
        });
        var clientWrites = pair.Client.WriteAsync(up).AsTask();
        Assert.Equal(up, await ReadExactlyAsync(pair.Server, up.Length));
        await clientWrites.WaitAsync(s_limit);
        Assert.False(serverWrites.IsCompleted); // the client has read nothing yet

        Assert.Equal(down, await ReadExactlyAsync(pair.Client, down.Length));
        await serverWrites.WaitAsync(s_limit);
    }

    [Fact]
    public async Task AStreamDisposedWhileAReadWaits_FailsThatRead_WithoutTouchingTheFreedConnection()
    {
        await using var pair = await ConnectAsync(ClientOptions(SslProtocols.Tls13));
        var reading = pair.Server.ReadAsync(new byte[16]).AsTask();
        await LoopbackSockets.WaitForAvailableAsync(pair.ClientSocket, 1, s_limit); // the tickets: the read waits for the client now
        Assert.False(reading.IsCompleted);

        await pair.Server.DisposeAsync();
        await pair.Client.WriteAsync("a NOOP\r\n"u8.ToArray());
        await Assert.ThrowsAsync<ObjectDisposedException>(() => reading.WaitAsync(s_limit));
    }

    [Fact]
    public async Task TheClientsCloseNotify_EndsTheStream_AndAZeroByteReadWaitsForData()
    {
        await using var pair = await ConnectAsync(ClientOptions(SslProtocols.Tls13));

        // A zero-byte read holds no buffer and returns once something arrived.
        var waiting = pair.Server.ReadAsync(Memory<byte>.Empty).AsTask();
        Assert.False(waiting.IsCompleted);
        await pair.Client.WriteAsync("x"u8.ToArray());
        Assert.Equal(0, await waiting.WaitAsync(s_limit));
        Assert.Equal("x"u8.ToArray(), await ReadExactlyAsync(pair.Server, 1));

        await pair.Client.ShutdownAsync();
        Assert.Equal(0, await pair.Server.ReadAsync(new byte[16]).AsTask().WaitAsync(s_limit));
        Assert.Equal(0, await pair.Server.ReadAsync(Memory<byte>.Empty).AsTask().WaitAsync(s_limit));
    }

    [Fact]
    public async Task PlaintextInsteadOfAClientHello_FailsTheHandshake_WithOpenSslsReason()
    {
        var (clientSocket, serverSocket) = await LoopbackSockets.ConnectPairAsync();
        using var client = clientSocket;
        using var socket = serverSocket;
        await using var server = new TlsServerStream(TlsRecordLayer.Accept(_context), new NetworkStream(socket, ownsSocket: false));

        await client.SendAsync("a1 LOGIN alice secret\r\n"u8.ToArray());
        var failure = await Assert.ThrowsAsync<AuthenticationException>(() => server.AuthenticateAsync(default, CancellationToken.None).WaitAsync(s_limit));
        Assert.StartsWith("TLS handshake failed: error:", failure.Message, StringComparison.Ordinal); // OpenSSL's code and reason
    }

    [Fact]
    public async Task AClientGoneInTheMiddleOfTheHandshake_IsAnIOException()
    {
        var (clientSocket, serverSocket) = await LoopbackSockets.ConnectPairAsync();
        using var socket = serverSocket;
        await using var server = new TlsServerStream(TlsRecordLayer.Accept(_context), new NetworkStream(socket, ownsSocket: false));

        // The first bytes of a ClientHello's record, then the close.
        await clientSocket.SendAsync(new byte[] { 22, 3, 1, 0x01, 0x00 });
        clientSocket.Dispose();
        await Assert.ThrowsAsync<IOException>(() => server.AuthenticateAsync(default, CancellationToken.None).WaitAsync(s_limit));
    }

    [Fact]
    public async Task TheClientHelloReadAhead_IsTheHandshakesFirstInput()
    {
        // Behind a PROXY header, the header's reader may have read the start of the ClientHello.
        var (clientSocket, serverSocket) = await LoopbackSockets.ConnectPairAsync();
        using var socket = serverSocket;
        await using var clientStream = new SslStream(new NetworkStream(clientSocket, ownsSocket: true));
        var handshake = clientStream.AuthenticateAsClientAsync(ClientOptions(SslProtocols.Tls13));
        await LoopbackSockets.WaitForAvailableAsync(socket, 100, s_limit);
        var readAhead = new byte[100];
        Assert.Equal(100, await socket.ReceiveAsync(readAhead.AsMemory()));

        await using var server = new TlsServerStream(TlsRecordLayer.Accept(_context), new NetworkStream(socket, ownsSocket: false));
        await server.AuthenticateAsync(readAhead, CancellationToken.None).WaitAsync(s_limit);
        await handshake.WaitAsync(s_limit);
        await clientStream.WriteAsync("a NOOP\r\n"u8.ToArray());
        Assert.Equal("a NOOP\r\n"u8.ToArray(), await ReadExactlyAsync(server, 8));
    }

    [Fact]
    public void AKeyThatIsNotTheCertificates_FailsTheContext()
    {
        var other = TestCertificates.CreateSelfSigned(Path.Combine(_directory, "other"));
        var failure = Assert.Throws<CryptographicException>(() => TlsServerContext.Create(_certificate.CertificatePath, other.KeyPath, releaseBuffers: true));
        Assert.Contains(other.KeyPath, failure.Message, StringComparison.Ordinal);
        Assert.Throws<CryptographicException>(() => TlsServerContext.Create(Path.Combine(_directory, "missing.pem"), _certificate.KeyPath, releaseBuffers: true));
    }

    private static async Task<byte[]> ReadExactlyAsync(Stream stream, int count)
    {
        var buffer = new byte[count];
        await stream.ReadExactlyAsync(buffer).AsTask().WaitAsync(s_limit);
        return buffer;
    }

    private SslClientAuthenticationOptions ClientOptions(SslProtocols protocol) => new()
    {
        TargetHost = "localhost",
        EnabledSslProtocols = protocol,
        RemoteCertificateValidationCallback = AcceptTheTestCertificate,
    };

    private bool AcceptTheTestCertificate(object sender, System.Security.Cryptography.X509Certificates.X509Certificate? certificate, System.Security.Cryptography.X509Certificates.X509Chain? chain, SslPolicyErrors errors) =>
        certificate?.GetRawCertData().AsSpan().SequenceEqual(_certificate.Certificate.RawData) == true;

    private Task<TlsTestPair> ConnectAsync(SslClientAuthenticationOptions options, Action<Socket>? configureClient = null, Action<Socket>? configureServer = null) =>
        TlsTestPair.ConnectAsync(_context, options, configureClient, configureServer);
}
