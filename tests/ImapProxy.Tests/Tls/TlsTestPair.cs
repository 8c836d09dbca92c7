using System.Net.Security;
using System.Net.Sockets;
using ImapProxy.Testing.Sockets;
using ImapProxy.Tls;

namespace ImapProxy.Tests.Tls;

/// <summary>
/// A TLS connection over real loopback sockets: the proxy's own server side (<see cref="TlsServerStream"/> on a
/// connection of a <see cref="TlsServerContext"/>) and the runtime's SslStream as the client, both past the handshake.
/// </summary>
internal sealed record TlsTestPair(TlsServerStream Server, SslStream Client, Socket ServerSocket, Socket ClientSocket) : IAsyncDisposable
{
    public static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    public static async Task<TlsTestPair> ConnectAsync(
        TlsServerContext context, SslClientAuthenticationOptions options, Action<Socket>? configureClient = null, Action<Socket>? configureServer = null)
    {
        var (clientSocket, serverSocket) = await LoopbackSockets.ConnectPairAsync(configureClient);
        configureServer?.Invoke(serverSocket);
        var server = new TlsServerStream(TlsRecordLayer.Accept(context), new NetworkStream(serverSocket, ownsSocket: false));
        var client = new SslStream(new NetworkStream(clientSocket, ownsSocket: true));
        await Task.WhenAll(server.AuthenticateAsync(default, CancellationToken.None), client.AuthenticateAsClientAsync(options)).WaitAsync(Limit);
        return new TlsTestPair(server, client, serverSocket, clientSocket);
    }

    public async ValueTask DisposeAsync()
    {
        await Server.DisposeAsync();
        await Client.DisposeAsync();
        ServerSocket.Dispose();
    }
}
