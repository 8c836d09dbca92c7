using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using ImapProxy.FunctionalTests.Consul;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Consul;
using ImapProxy.Testing.Dovecot;
using ImapProxy.Testing.Prometheus;
using ImapProxy.Testing.Proxy;
using ImapProxy.Testing.Raw;

namespace ImapProxy.FunctionalTests.Telemetry;

/// <summary>
/// A real Consul agent; two real Dovecot backends (dovecot-1, dovecot-2, TCP checks every second); a third
/// registered backend nobody listens for (<see cref="DownBackend"/>); the proxy reading its directory from
/// Consul; and a real Prometheus scraping the proxy's <c>/metrics</c> every second while it evaluates
/// <c>deploy/prometheus/imapproxy-alerts.yml</c>. Each test class owns one, so its counters start at zero.
/// </summary>
/// <remarks>
/// <see cref="DownBackend"/> has no health check, so Consul lists it as passing, as it does in the seconds
/// before a check notices a crash, and it is draining, so hashing never picks it: only a user placed on it
/// goes there, and that login is refused at connect (a backend connect error, an "unavailable" login).
/// </remarks>
public sealed class TelemetryCluster : IAsyncLifetime
{
    public const string Service = ConsulCluster.Service;

    public const string DownBackend = "dovecot-down";

    /// <summary>Names that cannot occur in a scrape by accident, so finding one there means a user name leaked.</summary>
    public static readonly DovecotUser[] Users =
    [
        new("quokka.vanderbilt", "quokka-pass"),
        new("zanzibar-omelette", "zanzibar-pass"),
        new("xylophone_kestrel", "xylophone-pass"),
        new("marzipan@periwinkle.test", "marzipan-pass"),
        new("okapi.fandango", "okapi-pass"),
        new("wombat-tiramisu", "wombat-pass"),
        new("narwhal_sassafras", "narwhal-pass"),
        new("pangolin.rhubarb", "pangolin-pass"),
        new("axolotl-calliope", "axolotl-pass"),
        new("capybara.tamarind", "capybara-pass"),
    ];

    private static readonly TimeSpan s_viewTimeout = TimeSpan.FromSeconds(60);

    private readonly ConcurrentDictionary<string, Lazy<Task>> _once = new(StringComparer.Ordinal);
    private string _directory = "";

    public ConsulAgent Consul { get; private set; } = null!;

    public DovecotInstance Backend1 { get; private set; } = null!;

    public DovecotInstance Backend2 { get; private set; } = null!;

    public ProxyServer Proxy { get; private set; } = null!;

    public PrometheusServer Prometheus { get; private set; } = null!;

    public TestCertificate Certificate { get; private set; } = null!;

    /// <summary>The checked-out repository (the directory holding ImapProxy.sln).</summary>
    public static string RepositoryRoot { get; } = FindRepositoryRoot();

    /// <summary>The alert rules Prometheus loads.</summary>
    public static string AlertRulesPath { get; } = Path.Combine(RepositoryRoot, "deploy", "prometheus", "imapproxy-alerts.yml");

    public async Task InitializeAsync()
    {
        _directory = System.IO.Directory.CreateTempSubdirectory("imapproxy-telemetry-").FullName;
        Certificate = TestCertificates.CreateSelfSigned(_directory);
        var started = await Task.WhenAll(
            DovecotInstance.StartAsync(new DovecotOptions { Users = Users, SeedMessagesPerUser = 1 }),
            DovecotInstance.StartAsync(new DovecotOptions { Users = Users, SeedMessagesPerUser = 1 }));
        Backend1 = started[0];
        Backend2 = started[1];
        Consul = await ConsulAgent.StartAsync();

        // Draining before it is registered: it must never be a hashing candidate, not even for one view.
        await Consul.PutKeyAsync($"imapproxy/backends/{DownBackend}", "draining");
        await Consul.RegisterServiceAsync(Service, DownBackend, "127.0.0.1", ClosedPort(), new Dictionary<string, string> { ["weight"] = "100" });
        await ConsulCluster.RegisterBackendsAsync(Consul, Backend1, Backend2);

        Proxy = await ProxyServer.StartAsync(
            [],
            Certificate.CertificatePath,
            Certificate.KeyPath,
            ConsulCluster.ProxySettings(Consul));
        await WaitForCandidatesAsync("dovecot-1,dovecot-2", skip: 0);
        Prometheus = await PrometheusServer.StartAsync([Proxy.Admin], [AlertRulesPath]);
        await Prometheus.WaitForTargetsUpAsync(TimeSpan.FromSeconds(30));
    }

    public async Task DisposeAsync()
    {
        if (Prometheus is not null)
        {
            await Prometheus.DisposeAsync();
        }

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

    /// <summary>Runs <paramref name="action"/> the first time a test of the class asks for <paramref name="key"/>; later callers await that run.</summary>
    public Task OnceAsync(string key, Func<Task> action) => _once.GetOrAdd(key, _ => new Lazy<Task>(action)).Value;

    /// <summary>Waits until the proxy logs a directory view whose candidates are exactly <paramref name="ids"/> (comma-separated).</summary>
    public Task WaitForCandidatesAsync(string ids, int skip) =>
        Proxy.Logs.WaitForAsync(
            l => l.Contains("Directory view changed: ", StringComparison.Ordinal) && l.Contains($"candidates [{ids}]", StringComparison.Ordinal),
            s_viewTimeout,
            skip);

    /// <summary>Logs in through the proxy (implicit TLS); returns the client and the tagged answer.</summary>
    public async Task<(RawImapClient Client, string Answer)> LoginAsync(string user, string password)
    {
        var client = await RawImapClient.ConnectAsync(Proxy.Imaps, IPAddress.Loopback, implicitTls: true, serverCertificate: Certificate.Certificate);
        try
        {
            await client.ReadLineAsync();
            var answer = (await client.CommandAsync("a", $"LOGIN {user} {password}"))[^1];
            return (client, answer);
        }
        catch
        {
            await client.DisposeAsync();
            throw;
        }
    }

    /// <summary>Logs in and out again; returns the tagged answer to LOGIN.</summary>
    public async Task<string> LoginOnceAsync(string user, string password)
    {
        var (client, answer) = await LoginAsync(user, password);
        await using (client)
        {
            // Answered by the backend after a hand-over, by the proxy itself otherwise.
            await client.CommandAsync("z", "LOGOUT");
        }

        return answer;
    }

    /// <summary>The proxy's own exposition at <c>/metrics</c> on its admin endpoint, as Prometheus reads it.</summary>
    public async Task<string> ScrapeAsync()
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        return await http.GetStringAsync(new Uri($"http://{Proxy.Admin}/metrics"));
    }

    private static int ClosedPort()
    {
        // Bound and released at once: nothing listens there, so a connect is refused.
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    private static string FindRepositoryRoot()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "ImapProxy.sln")))
        {
            directory = directory.Parent;
        }

        return directory?.FullName ?? throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"ImapProxy.sln not found above {AppContext.BaseDirectory}"));
    }
}
