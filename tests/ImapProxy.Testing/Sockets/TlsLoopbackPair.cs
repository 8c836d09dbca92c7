using System.Net.Security;
using System.Net.Sockets;
using ImapProxy.Testing.Certificates;

namespace ImapProxy.Testing.Sockets;

/// <summary>
/// A TLS connection on loopback, both ends in process, handshake done: <see cref="Server"/> presents the test
/// certificate, <see cref="Client"/> trusts exactly that certificate. <see cref="ServerSocket"/> is the socket under
/// the server's stream, for tests that read and write its ciphertext directly.
/// </summary>
public sealed record TlsLoopbackPair(SslStream Server, SslStream Client, Socket ServerSocket) : IAsyncDisposable
{
    private static readonly TimeSpan s_handshakeLimit = TimeSpan.FromSeconds(30);

    public static async Task<TlsLoopbackPair> ConnectAsync(TestCertificate certificate)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        var (clientSocket, serverSocket) = await LoopbackSockets.ConnectPairAsync();
        var server = new SslStream(new NetworkStream(serverSocket, ownsSocket: false));
        var client = new SslStream(new NetworkStream(clientSocket, ownsSocket: true), false, (_, cert, _, _) => cert?.GetRawCertData().AsSpan().SequenceEqual(certificate.Certificate.RawData) == true);
        await Task.WhenAll(
            server.AuthenticateAsServerAsync(new SslServerAuthenticationOptions { ServerCertificate = certificate.Certificate }),
            client.AuthenticateAsClientAsync("localhost")).WaitAsync(s_handshakeLimit);
        return new TlsLoopbackPair(server, client, serverSocket);
    }

    public async ValueTask DisposeAsync()
    {
        await Server.DisposeAsync();
        await Client.DisposeAsync();
        ServerSocket.Dispose();
    }
}
