using ImapProxy.Connections.Transport;
using ImapProxy.Testing.Proxy;
using ImapProxy.Testing.Raw;
using ImapProxy.Tls;
using MailKit;
using MailKit.Net.Imap;
using MailKit.Security;
using Microsoft.Extensions.DependencyInjection;
using MimeKit;

namespace ImapProxy.FunctionalTests;

/// <summary>
/// The proxy on .NET's own sockets and TLS (<c>Performance:SocketEngine=DotNet</c> and <c>TlsEngine=SslStream</c>:
/// what other systems than Linux get, and the switches back from the epoll engine and the proxy's own OpenSSL
/// connections): real clients through every kind of listener to the cluster's Dovecots.
/// </summary>
[Collection(ClusterDefinition.Name)]
public sealed class DotNetSocketEngineTests(ClusterFixture cluster) : IAsyncLifetime
{
    private ProxyServer _proxy = null!;

    public async Task InitializeAsync()
    {
        _proxy = await ProxyServer.StartAsync(
            [new ProxyBackend("dovecot-1", cluster.Backend1.Address, cluster.Backend1.Port), new ProxyBackend("dovecot-2", cluster.Backend2.Address, cluster.Backend2.Port)],
            cluster.Certificate.CertificatePath,
            cluster.Certificate.KeyPath,
            new Dictionary<string, string?>
            {
                ["ImapProxy:Performance:SocketEngine"] = "DotNet",
                ["ImapProxy:Performance:TlsEngine"] = "SslStream",
                ["ImapProxy:PreAuth:TrustedNetworks:0"] = ClusterFixture.TrustedClient + "/32",
            });
    }

    public async Task DisposeAsync() => await _proxy.DisposeAsync();

    [Theory]
    [InlineData(Listener.StartTls)]
    [InlineData(Listener.ImplicitTls)]
    [InlineData(Listener.TrustedPlain)]
    public async Task LoginAppendFetchAndLogout(Listener listener)
    {
        Assert.IsType<DotNetSocketEngine>(_proxy.Services.GetRequiredService<ISocketEngine>());
        Assert.Null(_proxy.Services.GetRequiredService<ServerCertificateProvider>().GetServer().Context);
        using var client = await MailKitClient.ConnectAsync(_proxy, cluster.ServerCertificate, listener);
        await client.AuthenticateAsync(new SaslMechanismPlain("erin", "erin-pass"));
        Assert.True(client.Capabilities.HasFlag(ImapCapabilities.Move)); // the backend's own list

        var folder = await client.GetFolder(client.PersonalNamespaces[0]).CreateAsync("dotnet-" + Guid.NewGuid().ToString("N"), isMessageFolder: true)
            ?? throw new InvalidOperationException("CREATE returned no folder");
        var text = new string('y', 300 * 1024);
        var uid = await folder.AppendAsync(new AppendRequest(new MimeMessage([new MailboxAddress("E", "erin@example.org")], [new MailboxAddress("E", "erin@example.org")], "Engine", new TextPart("plain") { Text = text })));
        await folder.OpenAsync(FolderAccess.ReadOnly);
        var fetched = await folder.GetMessageAsync(uid!.Value);
        Assert.Equal(text, (fetched.TextBody ?? "").TrimEnd('\r', '\n'));
        await folder.CloseAsync();
        await folder.DeleteAsync();
        await client.DisconnectAsync(quit: true);
    }

    [Fact]
    public async Task CommandsPipelinedWithLogin_AreAllAnsweredInOrder_AndLogoutCloses()
    {
        await using var client = await RawImapClient.ConnectAsync(_proxy.Imaps, implicitTls: true, serverCertificate: cluster.ServerCertificate);
        await client.ReadLineAsync();
        await client.SendAsync("a LOGIN frank frank-pass\r\nb SELECT INBOX\r\nc NOOP\r\nd LOGOUT\r\n");
        var tagged = await client.ReadTaggedAsync(4);

        Assert.Equal(["a", "b", "c", "d"], tagged.Select(l => l.Split(' ')[0]));
        Assert.True(await client.WaitForCloseAsync());
    }
}
