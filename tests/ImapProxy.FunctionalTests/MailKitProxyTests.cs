using System.Net;
using System.Security.Cryptography;
using ImapProxy.Tls;
using MailKit;
using MailKit.Net.Imap;
using MailKit.Search;
using MailKit.Security;
using Microsoft.Extensions.DependencyInjection;
using MimeKit;

namespace ImapProxy.FunctionalTests;

/// <summary>A real IMAP client (MailKit) through the proxy to real Dovecot backends.</summary>
[Collection(ClusterDefinition.Name)]
public class MailKitProxyTests(ClusterFixture cluster)
{
    public enum Mechanism
    {
        LoginCommand,
        Plain,
        SaslLogin,
    }

    private static async Task AuthenticateAsync(ImapClient client, Mechanism mechanism, string user, string password)
    {
        switch (mechanism)
        {
            case Mechanism.LoginCommand:
                // With no SASL mechanism left MailKit falls back to the LOGIN command.
                client.AuthenticationMechanisms.Clear();
                await client.AuthenticateAsync(user, password);
                break;
            case Mechanism.Plain:
                await client.AuthenticateAsync(new SaslMechanismPlain(user, password));
                break;
            default:
                await client.AuthenticateAsync(new SaslMechanismLogin(user, password));
                break;
        }
    }

    [Theory]
    [InlineData(Listener.StartTls, Mechanism.LoginCommand)]
    [InlineData(Listener.StartTls, Mechanism.Plain)]
    [InlineData(Listener.StartTls, Mechanism.SaslLogin)]
    [InlineData(Listener.ImplicitTls, Mechanism.LoginCommand)]
    [InlineData(Listener.ImplicitTls, Mechanism.Plain)]
    [InlineData(Listener.ImplicitTls, Mechanism.SaslLogin)]
    [InlineData(Listener.TrustedPlain, Mechanism.LoginCommand)]
    [InlineData(Listener.TrustedPlain, Mechanism.Plain)]
    public async Task Login_ThenListSelectFetchSearch(Listener listener, Mechanism mechanism)
    {
        using var client = await MailKitClient.ConnectAsync(cluster, listener);
        Assert.Equal(listener != Listener.TrustedPlain, client.IsSecure);
        Assert.NotNull(cluster.Proxy.Services.GetRequiredService<ServerCertificateProvider>().GetServer().Context); // Linux: the proxy's own OpenSSL connections
        await AuthenticateAsync(client, mechanism, "alice", "alice-pass");
        Assert.True(client.IsAuthenticated);
        // The post-login capabilities are Dovecot's, not the proxy's pre-login set.
        Assert.True(client.Capabilities.HasFlag(ImapCapabilities.Move));
        Assert.True(client.Capabilities.HasFlag(ImapCapabilities.CondStore));

        var folders = await client.GetFoldersAsync(client.PersonalNamespaces[0]);
        Assert.Contains(folders, f => f.FullName == "INBOX");

        var inbox = client.Inbox;
        await inbox.OpenAsync(FolderAccess.ReadOnly);
        Assert.True(inbox.Count >= 3);
        var summaries = await inbox.FetchAsync(0, -1, MessageSummaryItems.Envelope | MessageSummaryItems.Flags);
        Assert.Contains(summaries, s => s.Envelope?.Subject == "Seed message 2 for alice");
        var found = await inbox.SearchAsync(SearchQuery.SubjectContains("Seed message 2 for alice"));
        Assert.Single(found);

        await client.DisconnectAsync(quit: true);
        Assert.DoesNotContain("alice-pass", cluster.Proxy.Logs.AllText, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(Listener.ImplicitTls)]
    [InlineData(Listener.TrustedPlain)]
    public async Task Append_OneMegabyteMessage_RoundTripsIntact(Listener listener)
    {
        using var client = await MailKitClient.ConnectAsync(cluster, listener);
        await AuthenticateAsync(client, Mechanism.Plain, "bob", "bob-pass");
        var personal = client.GetFolder(client.PersonalNamespaces[0]);
        var folder = await personal.CreateAsync("append-" + Guid.NewGuid().ToString("N"), isMessageFolder: true)
            ?? throw new InvalidOperationException("CREATE returned no folder");

        var body = new string('x', 1024 * 1024 - 2) + "\r\n";
        var random = RandomNumberGenerator.GetHexString(64);
        var message = new MimeMessage(
            [new MailboxAddress("Bob", "bob@example.org")],
            [new MailboxAddress("Bob", "bob@example.org")],
            "Large " + random,
            new TextPart("plain") { Text = random + "\r\n" + body });
        var sentText = random + "\r\n" + body;
        var uid = await folder.AppendAsync(new AppendRequest(message));
        Assert.NotNull(uid);

        await folder.OpenAsync(FolderAccess.ReadOnly);
        var fetched = await folder.GetMessageAsync(uid.Value);
        Assert.Equal("Large " + random, fetched.Subject);
        // MIME may re-encode the long line (quoted-printable) and normalise line ends; the text must survive.
        var received = (fetched.TextBody ?? "").ReplaceLineEndings("\n").TrimEnd('\n');
        Assert.Equal(sentText.ReplaceLineEndings("\n").TrimEnd('\n').Length, received.Length);
        Assert.Equal(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(sentText.ReplaceLineEndings("\n").TrimEnd('\n'))), SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(received)));
        await folder.CloseAsync();
        await folder.DeleteAsync();
        await client.DisconnectAsync(quit: true);
    }

    [Theory]
    [InlineData(Listener.StartTls)]
    [InlineData(Listener.TrustedPlain)]
    public async Task Idle_ReceivesExists_ForAnAppendMadeBySecondSession(Listener listener)
    {
        var folderName = "idle-" + Guid.NewGuid().ToString("N");
        using var watcher = await MailKitClient.ConnectAsync(cluster, listener);
        await AuthenticateAsync(watcher, Mechanism.Plain, "carol", "carol-pass");
        var personal = watcher.GetFolder(watcher.PersonalNamespaces[0]);
        var folder = await personal.CreateAsync(folderName, isMessageFolder: true)
            ?? throw new InvalidOperationException("CREATE returned no folder");
        await folder.OpenAsync(FolderAccess.ReadOnly);
        Assert.Equal(0, folder.Count);

        var countChanged = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        folder.CountChanged += (_, _) => countChanged.TrySetResult(folder.Count);
        using var stopIdle = new CancellationTokenSource();
        var idle = watcher.IdleAsync(stopIdle.Token);

        using (var writer = await MailKitClient.ConnectAsync(cluster, Listener.ImplicitTls))
        {
            await AuthenticateAsync(writer, Mechanism.LoginCommand, "carol", "carol-pass");
            var target = await writer.GetFolderAsync(folderName);
            var message = new MimeMessage([new MailboxAddress("C", "carol@example.org")], [new MailboxAddress("C", "carol@example.org")], "Wake up", new TextPart("plain") { Text = "idle test" });
            await target.AppendAsync(new AppendRequest(message));
            await writer.DisconnectAsync(quit: true);
        }

        var count = await countChanged.Task.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(1, count);
        await stopIdle.CancelAsync();
        await idle;
        await folder.CloseAsync();
        await folder.DeleteAsync();
        await watcher.DisconnectAsync(quit: true);
    }

    [Fact]
    public async Task WrongPassword_IsAuthenticationFailed_AndARetryOnTheSameConnectionWorks()
    {
        // A distinct source address keeps Dovecot's auth penalty away from other tests.
        using var client = await MailKitClient.ConnectAsync(cluster, Listener.StartTls, IPAddress.Parse("127.0.0.21"));
        var failure = await Assert.ThrowsAsync<AuthenticationException>(() => client.AuthenticateAsync(new SaslMechanismPlain("dave", "wrong-password")));
        Assert.Contains("Authentication failed", failure.Message, StringComparison.Ordinal);
        Assert.True(client.IsConnected);

        await client.AuthenticateAsync(new SaslMechanismPlain("dave", "dave-pass"));
        Assert.True(client.IsAuthenticated);
        await client.Inbox.OpenAsync(FolderAccess.ReadOnly);
        await client.DisconnectAsync(quit: true);
        Assert.DoesNotContain("wrong-password", cluster.Proxy.Logs.AllText, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TwoUsers_LandOnTheirHashedBackends()
    {
        // Find two users that hash to different backends, so the test proves routing, not luck.
        var first = ClusterFixture.Users[0];
        var second = ClusterFixture.Users.First(u => cluster.BackendFor(u.Name) != cluster.BackendFor(first.Name));
        foreach (var user in new[] { first, second })
        {
            using var client = await MailKitClient.ConnectAsync(cluster, Listener.ImplicitTls);
            await AuthenticateAsync(client, Mechanism.Plain, user.Name, user.Password);
            await client.Inbox.OpenAsync(FolderAccess.ReadOnly);
            await client.DisconnectAsync(quit: true);

            var expected = cluster.BackendFor(user.Name);
            var other = expected == cluster.Backend1 ? cluster.Backend2 : cluster.Backend1;
            await expected.WaitForLogAsync(log => log.Contains($"Login: user=<{user.Name}>", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
            Assert.DoesNotContain($"Login: user=<{user.Name}>", other.ReadLog(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task TrickyPassword_WorksWithMailKit()
    {
        using var client = await MailKitClient.ConnectAsync(cluster, Listener.StartTls);
        await AuthenticateAsync(client, Mechanism.LoginCommand, "tricky", ClusterFixture.TrickyPassword);
        Assert.True(client.IsAuthenticated);
        await client.DisconnectAsync(quit: true);
    }
}
