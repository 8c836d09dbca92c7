using ImapProxy.Testing.Proxy;
using MailKit;
using MailKit.Net.Imap;
using MailKit.Security;

namespace ImapProxy.FunctionalTests;

/// <summary>
/// Backends given by host name (as a Kubernetes service would be), resolved by the system's own resolver: "localhost"
/// may give ::1 before 127.0.0.1, where the cluster's Dovecots listen, so an address that refuses is passed over.
/// </summary>
[Collection(ClusterDefinition.Name)]
public sealed class NamedBackendTests(ClusterFixture cluster) : IAsyncLifetime
{
    private ProxyServer _proxy = null!;

    public async Task InitializeAsync()
    {
        // The same ids as the cluster's proxy: each user lands on the Dovecot that holds its mailbox.
        _proxy = await ProxyServer.StartAsync(
            [new ProxyBackend("dovecot-1", "localhost", cluster.Backend1.Port), new ProxyBackend("dovecot-2", "localhost", cluster.Backend2.Port)],
            cluster.Certificate.CertificatePath,
            cluster.Certificate.KeyPath,
            new Dictionary<string, string?> { ["ImapProxy:PreAuth:TrustedNetworks:0"] = ClusterFixture.TrustedClient + "/32" });
    }

    public async Task DisposeAsync() => await _proxy.DisposeAsync();

    [Theory]
    [InlineData("erin", "erin-pass")]
    [InlineData("frank", "frank-pass")]
    public async Task UsersOfBackendsGivenByName_LogInAndReadTheirMailbox_AgainAndAgain(string user, string password)
    {
        for (var i = 0; i < 2; i++)
        {
            using var client = await MailKitClient.ConnectAsync(_proxy, cluster.ServerCertificate, Listener.TrustedPlain);
            await client.AuthenticateAsync(new SaslMechanismPlain(user, password));
            Assert.True(client.Capabilities.HasFlag(ImapCapabilities.Move)); // the backend's own list

            await client.Inbox.OpenAsync(FolderAccess.ReadOnly);
            await client.Inbox.CloseAsync();
            await client.DisconnectAsync(quit: true);
        }
    }
}
