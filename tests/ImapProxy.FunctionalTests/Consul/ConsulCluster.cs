using System.Net;
using System.Text.RegularExpressions;
using ImapProxy.Backends;
using ImapProxy.Directory;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Consul;
using ImapProxy.Testing.Dovecot;
using ImapProxy.Testing.Proxy;
using ImapProxy.Testing.Raw;

namespace ImapProxy.FunctionalTests.Consul;

/// <summary>
/// A real Consul dev agent, two real Dovecot backends registered in it as service "imap-backend" (ids
/// dovecot-1, dovecot-2, TCP health checks every second) and the proxy reading its directory from Consul.
/// Each test class that breaks something owns one.
/// </summary>
public sealed class ConsulCluster : IAsyncLifetime
{
    public const string Service = "imap-backend";

    public static readonly DovecotUser[] Users = Enumerable.Range(1, 12).Select(i => new DovecotUser($"user{i:D2}", $"pass{i:D2}")).ToArray();

    private string _directory = "";

    public ConsulAgent Consul { get; private set; } = null!;

    public DovecotInstance Backend1 { get; private set; } = null!;

    public DovecotInstance Backend2 { get; private set; } = null!;

    public ProxyServer Proxy { get; private set; } = null!;

    public TestCertificate Certificate { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        _directory = System.IO.Directory.CreateTempSubdirectory("imapproxy-consul-").FullName;
        Certificate = TestCertificates.CreateSelfSigned(_directory);
        var started = await Task.WhenAll(
            DovecotInstance.StartAsync(new DovecotOptions { Users = Users, SeedMessagesPerUser = 1 }),
            DovecotInstance.StartAsync(new DovecotOptions { Users = Users, SeedMessagesPerUser = 1 }));
        Backend1 = started[0];
        Backend2 = started[1];
        Consul = await ConsulAgent.StartAsync();
        await RegisterBackendsAsync();
        Proxy = await ProxyServer.StartAsync(
            [],
            Certificate.CertificatePath,
            Certificate.KeyPath,
            ProxySettings(Consul));
        await WaitForCandidatesAsync("dovecot-1,dovecot-2", skip: 0);
    }

    public async Task DisposeAsync()
    {
        if (Proxy is not null)
        {
            await Proxy.DisposeAsync();
        }

        if (Consul is not null)
        {
            await Consul.DisposeAsync();
        }

        if (Backend1 is not null)
        {
            await Backend1.DisposeAsync();
        }

        if (Backend2 is not null)
        {
            await Backend2.DisposeAsync();
        }

        System.IO.Directory.Delete(_directory, recursive: true);
    }

    /// <summary>Registers both backends (again, after a dev agent restart lost them) and waits until they pass.</summary>
    public Task RegisterBackendsAsync() => RegisterBackendsAsync(Consul, Backend1, Backend2);

    /// <summary>Registers two backends as dovecot-1 and dovecot-2 (TCP checks every second) and waits until they pass.</summary>
    public static async Task RegisterBackendsAsync(ConsulAgent consul, DovecotInstance backend1, DovecotInstance backend2)
    {
        await consul.RegisterServiceAsync(Service, "dovecot-1", backend1.Address, backend1.Port, new Dictionary<string, string> { ["weight"] = "100" }, tcpCheckInterval: TimeSpan.FromSeconds(1));
        await consul.RegisterServiceAsync(Service, "dovecot-2", backend2.Address, backend2.Port, new Dictionary<string, string> { ["weight"] = "100" }, tcpCheckInterval: TimeSpan.FromSeconds(1));
        await consul.WaitForHealthAsync(Service, "dovecot-1", "passing", TimeSpan.FromSeconds(30));
        await consul.WaitForHealthAsync(Service, "dovecot-2", "passing", TimeSpan.FromSeconds(30));
    }

    /// <summary>The proxy reading its directory from the agent, with every interval short enough for tests.</summary>
    public static Dictionary<string, string?> ProxySettings(ConsulAgent consul) => new()
    {
        ["ImapProxy:Consul:Enabled"] = "true",
        ["ImapProxy:Consul:Addresses:0"] = consul.HttpAddress.ToString(),
        ["ImapProxy:Consul:WaitTime"] = "00:00:10",
        ["ImapProxy:Consul:RetryDelay"] = "00:00:00.200",
        ["ImapProxy:Consul:MaxRetryDelay"] = "00:00:01",
        ["ImapProxy:Directory:PlacementCacheTtl"] = "00:00:02",
        ["ImapProxy:Directory:NegativeCacheTtl"] = "00:00:01",
        ["ImapProxy:Directory:PlacementRefreshInterval"] = "00:00:01",
        ["ImapProxy:Directory:KickSpread"] = "00:00:00.200",
        ["ImapProxy:Directory:SuspectDuration"] = "00:00:02",
    };

    /// <summary>Waits until the proxy logs a directory view whose candidates are exactly <paramref name="ids"/>.</summary>
    public Task WaitForCandidatesAsync(string ids, int skip) =>
        Proxy.Logs.WaitForAsync(l => l.Contains($"candidates [{ids}]", StringComparison.Ordinal), TimeSpan.FromSeconds(60), skip);

    public DovecotInstance Instance(string id) => id == "dovecot-1" ? Backend1 : Backend2;

    /// <summary>The backend hashing picks for a user when both backends are candidates.</summary>
    public static string HashedId(string user, params string[] ids) =>
        RendezvousHash.Pick(user, ids.Select(id => new BackendEndpoint(id, "127.0.0.1", 1, 100)).ToArray())!.Id;

    /// <summary>How many logins of <paramref name="user"/> a backend has logged so far.</summary>
    public static int Logins(DovecotInstance backend, string user) =>
        Regex.Count(backend.ReadLog(), $"Login: user=<{Regex.Escape(user)}>");

    /// <summary>Waits until the backend has logged one more login of the user than <paramref name="before"/>.</summary>
    public static Task WaitForLoginAsync(DovecotInstance backend, string user, int before) =>
        backend.WaitForLogAsync(log => Regex.Count(log, $"Login: user=<{Regex.Escape(user)}>") > before, TimeSpan.FromSeconds(30));

    public static string Password(string user) => Users.Single(u => u.Name == user).Password;

    /// <summary>Logs in through the proxy (implicit TLS) from its own loopback address; returns the client and the tagged answer.</summary>
    public async Task<(RawImapClient Client, string Answer)> LoginAsync(string user, string? password = null)
    {
        var client = await RawImapClient.ConnectAsync(Proxy.Imaps, IPAddress.Loopback, implicitTls: true, serverCertificate: Certificate.Certificate);
        await client.ReadLineAsync();
        var answer = (await client.CommandAsync("a", $"LOGIN {user} {password ?? Password(user)}"))[^1];
        return (client, answer);
    }

    /// <summary>Logs in, checks which backend took the login, logs out.</summary>
    public async Task<string> LoginLandsOnAsync(string user)
    {
        var before1 = Logins(Backend1, user);
        var before2 = Logins(Backend2, user);
        var (client, answer) = await LoginAsync(user);
        await using (client)
        {
            Assert.StartsWith("a OK [CAPABILITY ", answer, StringComparison.Ordinal);
            await client.CommandAsync("z", "LOGOUT");
        }

        // Dovecot's log process writes the login line asynchronously: wait for whichever backend shows it.
        using var stop = new CancellationTokenSource();
        var wait1 = Backend1.WaitForLogAsync(log => Regex.Count(log, $"Login: user=<{Regex.Escape(user)}>") > before1, TimeSpan.FromSeconds(30), stop.Token);
        var wait2 = Backend2.WaitForLogAsync(log => Regex.Count(log, $"Login: user=<{Regex.Escape(user)}>") > before2, TimeSpan.FromSeconds(30), stop.Token);
        var first = await Task.WhenAny(wait1, wait2);
        await first;
        await stop.CancelAsync();
        await Task.WhenAll(wait1, wait2).ContinueWith(_ => { }, TaskScheduler.Default);
        var on1 = first == wait1;
        Assert.Equal(before1 + (on1 ? 1 : 0), Logins(Backend1, user));
        Assert.Equal(before2 + (on1 ? 0 : 1), Logins(Backend2, user));
        return on1 ? "dovecot-1" : "dovecot-2";
    }
}
