using ImapProxy.Configuration;
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
/// The proxy on .NET's own sockets (<c>Performance:SocketEngine=DotNet</c>: what other systems than Linux get, and the
/// switch back from the epoll engine), where the splice is two copy loops reading and writing the client's TLS stream
/// at once: with the proxy's own TLS connections (<c>TlsEngine=OpenSsl</c>) and with .NET's (<c>SslStream</c>, what
/// other systems get). Real clients through every kind of listener to the cluster's Dovecots.
/// </summary>
[Collection(ClusterDefinition.Name)]
public sealed class DotNetSocketEngineTests(ClusterFixture cluster) : IAsyncLifetime
{
    private readonly Dictionary<TlsEngineKind, ProxyServer> _proxies = [];

    public async Task InitializeAsync()
    {
        foreach (var engine in new[] { TlsEngineKind.OpenSsl, TlsEngineKind.SslStream })
        {
            _proxies[engine] = await ProxyServer.StartAsync(
                [new ProxyBackend("dovecot-1", cluster.Backend1.Address, cluster.Backend1.Port), new ProxyBackend("dovecot-2", cluster.Backend2.Address, cluster.Backend2.Port)],
                cluster.Certificate.CertificatePath,
                cluster.Certificate.KeyPath,
                new Dictionary<string, string?>
                {
                    ["ImapProxy:Performance:SocketEngine"] = "DotNet",
                    ["ImapProxy:Performance:TlsEngine"] = engine.ToString(),
                    ["ImapProxy:PreAuth:TrustedNetworks:0"] = ClusterFixture.TrustedClient + "/32",
                });
        }
    }

    public async Task DisposeAsync()
    {
        foreach (var proxy in _proxies.Values)
        {
            await proxy.DisposeAsync();
        }
    }

    [Theory]
    [InlineData(Listener.StartTls, TlsEngineKind.OpenSsl)]
    [InlineData(Listener.ImplicitTls, TlsEngineKind.OpenSsl)]
    [InlineData(Listener.StartTls, TlsEngineKind.SslStream)]
    [InlineData(Listener.ImplicitTls, TlsEngineKind.SslStream)]
    [InlineData(Listener.TrustedPlain, TlsEngineKind.OpenSsl)]
    public async Task LoginAppendFetchAndLogout(Listener listener, TlsEngineKind engine)
    {
        var proxy = _proxies[engine];
        Assert.IsType<DotNetSocketEngine>(proxy.Services.GetRequiredService<ISocketEngine>());
        Assert.Equal(engine == TlsEngineKind.OpenSsl, proxy.Services.GetRequiredService<ServerCertificateProvider>().GetServer().Context is not null);
        using var client = await MailKitClient.ConnectAsync(proxy, cluster.ServerCertificate, listener);
        await client.AuthenticateAsync(new SaslMechanismPlain("erin", "erin-pass"));
        Assert.True(client.Capabilities.HasFlag(ImapCapabilities.Move)); // the backend's own list

        var folder = await client.GetFolder(client.PersonalNamespaces[0]).CreateAsync("dotnet-" + Guid.NewGuid().ToString("N"), isMessageFolder: true)
            ?? throw new InvalidOperationException("CREATE returned no folder");
        var text = new string('y', 3 * 1024 * 1024); // records both ways, and 64 KB writes toward the client
        var uid = await folder.AppendAsync(new AppendRequest(new MimeMessage([new MailboxAddress("E", "erin@example.org")], [new MailboxAddress("E", "erin@example.org")], "Engine", new TextPart("plain") { Text = text })));
        await folder.OpenAsync(FolderAccess.ReadOnly);
        var fetched = await folder.GetMessageAsync(uid!.Value);
        Assert.Equal(text, (fetched.TextBody ?? "").TrimEnd('\r', '\n'));
        await folder.CloseAsync();
        await folder.DeleteAsync();
        await client.DisconnectAsync(quit: true);
    }

    [Theory]
    [InlineData(TlsEngineKind.OpenSsl)]
    [InlineData(TlsEngineKind.SslStream)]
    public async Task CommandsPipelinedWithLogin_AreAllAnsweredInOrder_AndLogoutCloses(TlsEngineKind engine)
    {
        await using var client = await RawImapClient.ConnectAsync(_proxies[engine].Imaps, implicitTls: true, serverCertificate: cluster.ServerCertificate);
        await client.ReadLineAsync();
        await client.SendAsync("a LOGIN frank frank-pass\r\nb SELECT INBOX\r\nc NOOP\r\nd LOGOUT\r\n");
        var tagged = await client.ReadTaggedAsync(4);

        Assert.Equal(["a", "b", "c", "d"], tagged.Select(l => l.Split(' ')[0]));
        Assert.True(await client.WaitForCloseAsync());
    }
}
