using System.Globalization;
using System.Net;
using ImapProxy.Connections;
using ImapProxy.Testing.Logging;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace ImapProxy.Testing.Proxy;

/// <summary>A backend the test proxy routes to.</summary>
public sealed record ProxyBackend(string Id, string Host, int Port, double Weight = 100, string Authentication = "Auto", string Tls = "None");

/// <summary>
/// The real proxy host, in-process, on 127.0.0.1 with free ports: a STARTTLS listener ("imap"), an implicit
/// TLS listener ("imaps"), a plain listener without STARTTLS for trusted-network tests ("plain") and the
/// admin endpoint. Logs are captured for assertions.
/// </summary>
public sealed class ProxyServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private ProxyServer(WebApplication app, CapturingLoggerProvider logs)
    {
        _app = app;
        Logs = logs;
        var listeners = app.Services.GetRequiredService<ListenerRegistry>();
        Imap = listeners.GetEndPoint("imap");
        Imaps = listeners.GetEndPoint("imaps");
        Plain = listeners.GetEndPoint("plain");
        Admin = listeners.GetEndPoint(ImapProxyHost.AdminListenerName);
    }

    public IPEndPoint Imap { get; }

    public IPEndPoint Imaps { get; }

    public IPEndPoint Plain { get; }

    public IPEndPoint Admin { get; }

    public CapturingLoggerProvider Logs { get; }

    public IServiceProvider Services => _app.Services;

    /// <param name="backends">Static backends.</param>
    /// <param name="certificatePath">PEM certificate for the TLS listeners.</param>
    /// <param name="keyPath">PEM key.</param>
    /// <param name="settings">Extra configuration keys (e.g. "ImapProxy:PreAuth:ErrorBudget"), applied last.</param>
    public static async Task<ProxyServer> StartAsync(
        IEnumerable<ProxyBackend> backends,
        string certificatePath,
        string keyPath,
        IDictionary<string, string?>? settings = null)
    {
        var config = new Dictionary<string, string?>
        {
            ["ImapProxy:Listeners:0:Name"] = "imap",
            ["ImapProxy:Listeners:0:Address"] = "127.0.0.1",
            ["ImapProxy:Listeners:0:Port"] = "0",
            ["ImapProxy:Listeners:0:Tls"] = "StartTls",
            ["ImapProxy:Listeners:1:Name"] = "imaps",
            ["ImapProxy:Listeners:1:Address"] = "127.0.0.1",
            ["ImapProxy:Listeners:1:Port"] = "0",
            ["ImapProxy:Listeners:1:Tls"] = "Implicit",
            ["ImapProxy:Listeners:2:Name"] = "plain",
            ["ImapProxy:Listeners:2:Address"] = "127.0.0.1",
            ["ImapProxy:Listeners:2:Port"] = "0",
            ["ImapProxy:Listeners:2:Tls"] = "None",
            ["ImapProxy:Tls:CertificateFile"] = certificatePath,
            ["ImapProxy:Tls:KeyFile"] = keyPath,
            ["ImapProxy:Admin:Address"] = "127.0.0.1",
            ["ImapProxy:Admin:Port"] = "0",
            // Fast failures keep the suite quick; growth of the delay is covered by unit tests.
            ["ImapProxy:PreAuth:AuthFailureDelay"] = "00:00:00.050",
            ["ImapProxy:PreAuth:AuthFailureMaxDelay"] = "00:00:00.200",
            ["ImapProxy:Session:ShutdownGrace"] = "00:00:02",
        };
        var i = 0;
        foreach (var backend in backends)
        {
            config[$"ImapProxy:Backends:Static:{i}:Id"] = backend.Id;
            config[$"ImapProxy:Backends:Static:{i}:Host"] = backend.Host;
            config[$"ImapProxy:Backends:Static:{i}:Port"] = backend.Port.ToString(CultureInfo.InvariantCulture);
            config[$"ImapProxy:Backends:Static:{i}:Weight"] = backend.Weight.ToString(CultureInfo.InvariantCulture);
            config[$"ImapProxy:Backends:Static:{i}:Authentication"] = backend.Authentication;
            config[$"ImapProxy:Backends:Static:{i}:Tls"] = backend.Tls;
            i++;
        }

        if (settings is not null)
        {
            foreach (var (key, value) in settings)
            {
                config[key] = value;
            }
        }

        var logs = new CapturingLoggerProvider();
        var builder = ImapProxyHost.CreateBuilder([], configuration => configuration.AddInMemoryCollection(config));
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(LogLevel.Debug);
        builder.Logging.AddProvider(logs);
        var app = ImapProxyHost.Build(builder);
        await app.StartAsync();
        return new ProxyServer(app, logs);
    }

    public async Task StopAsync() => await _app.StopAsync();

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
