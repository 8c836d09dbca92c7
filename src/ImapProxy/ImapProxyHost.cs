using System.Net;
using ImapProxy.Admin;
using ImapProxy.Backends;
using ImapProxy.Configuration;
using ImapProxy.Connections;
using ImapProxy.Connections.Transport;
using ImapProxy.Connections.Transport.Epoll;
using ImapProxy.Directory;
using ImapProxy.Directory.Consul;
using ImapProxy.Telemetry;
using ImapProxy.Tls;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace ImapProxy;

/// <summary>
/// Composition of the proxy: one host, the IMAP listeners (<see cref="ImapListeners"/>) and Kestrel serving the
/// admin HTTP endpoint beside them. Data flows Connections → Directory → Backends → Splice.
/// </summary>
public static class ImapProxyHost
{
    public const string AdminListenerName = "admin";

    private const string InlineCompletionsVariable = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";

    /// <summary>
    /// Configuration: appsettings.json, an optional JSON file (--config PATH or IMAPPROXY_CONFIG), environment
    /// (ImapProxy__Section__Key), command line; later sources win.
    /// </summary>
    public static WebApplicationBuilder CreateBuilder(string[] args, Action<IConfigurationBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(args);
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        var configFile = FindConfigFile(args) ?? Environment.GetEnvironmentVariable("IMAPPROXY_CONFIG");
        if (!string.IsNullOrEmpty(configFile))
        {
            builder.Configuration.AddJsonFile(Path.GetFullPath(configFile), optional: false, reloadOnChange: false);
            // Environment and command line keep precedence over the file.
            builder.Configuration.AddEnvironmentVariables();
            builder.Configuration.AddCommandLine(args);
        }

        configure?.Invoke(builder.Configuration);

        var inlineIo = builder.Configuration.GetValue($"{ImapProxyOptions.SectionName}:Performance:InlineIo", defaultValue: true);
        if (inlineIo && Environment.GetEnvironmentVariable(InlineCompletionsVariable) is null)
        {
            // Read once by the socket engine when the first socket starts async I/O, which has not happened yet.
            Environment.SetEnvironmentVariable(InlineCompletionsVariable, "1");
        }

        // Kestrel serves the admin endpoint only; the IMAP listeners are the proxy's own (ImapListeners).
        builder.WebHost.UseSockets(sockets => sockets.UnsafePreferInlineScheduling = inlineIo);
        if (!builder.Configuration.GetValue($"{ImapProxyOptions.SectionName}:Admin:Enabled", defaultValue: true))
        {
            // Kestrel with no endpoint would listen on localhost:5000 by default.
            builder.Services.AddSingleton<IServer, NoHttpServer>();
        }

        // I/O may run inline on the socket threads: a full log queue must drop lines, never block them.
        builder.Services.Configure<Microsoft.Extensions.Logging.Console.ConsoleLoggerOptions>(console =>
            console.QueueFullMode = Microsoft.Extensions.Logging.Console.ConsoleLoggerQueueFullMode.DropWrite);

        var services = builder.Services;
        services.AddOptions<ImapProxyOptions>()
            .Bind(builder.Configuration.GetSection(ImapProxyOptions.SectionName))
            .PostConfigure(options =>
            {
                // Defaults in code, not in appsettings.json: configuration arrays merge by index across sources.
                if (options.Listeners.Count == 0)
                {
                    options.Listeners.AddRange(ImapProxyOptions.DefaultListeners);
                }
            })
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<ImapProxyOptions>, ImapProxyOptionsValidator>();
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton<ListenerRegistry>();
        services.AddSingleton<ServerCertificateProvider>();
        services.AddSingleton<AllocatorTrim>();
        services.AddSingleton<TlsBufferPolicy>();
        services.AddSingleton<TrustedNetworks>();
        services.AddSingleton<AuthFailureThrottle>();
        services.AddSingleton(CreateSocketEngine);
        services.AddSingleton<BackendConnector>();
        services.AddSingleton<SessionRegistry>();
        services.AddSingleton<SessionLogScopes>();
        var consul = builder.Configuration.GetValue<bool>($"{ImapProxyOptions.SectionName}:Consul:Enabled");
        if (consul)
        {
            services.AddHttpClient<ConsulClient>().ConfigurePrimaryHttpMessageHandler(provider => CreateConsulHandler(provider.GetRequiredService<IOptions<ImapProxyOptions>>().Value.Consul));
            services.AddSingleton<ConsulDirectory>();
            services.AddSingleton<IBackendDirectory>(provider => provider.GetRequiredService<ConsulDirectory>());
            services.AddHostedService(provider => provider.GetRequiredService<ConsulDirectory>());
        }
        else
        {
            services.AddSingleton<IBackendDirectory, StaticDirectory>();
        }
        services.AddSingleton<ShutdownCoordinator>();
        services.AddSingleton<ImapSessionServices>();
        services.AddSingleton<ImapProxyMetrics>();
        services.AddSingleton<ImapListeners>();
        services.AddHostedService(provider => provider.GetRequiredService<ImapListeners>()); // after the directory's
        if (consul && builder.Configuration.GetValue<bool>($"{ImapProxyOptions.SectionName}:Consul:Registration:Enabled"))
        {
            // After the listeners, so stopped before them: the replica leaves the catalog as shutdown begins, not
            // after its spliced sessions have drained (the grace, a minute or more).
            services.AddHostedService<ConsulRegistration>();
        }

        AddOpenTelemetry(builder);
        services.AddOptions<HostOptions>().Configure<IOptions<ImapProxyOptions>>((host, proxy) =>
            host.ShutdownTimeout = proxy.Value.Session.ShutdownGrace + TimeSpan.FromSeconds(5));

        builder.WebHost.ConfigureKestrel(ConfigureListeners);
        return builder;
    }

    public static WebApplication Build(WebApplicationBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var app = builder.Build();
        app.MapHealthEndpoints();
        if (app.Services.GetRequiredService<IOptions<ImapProxyOptions>>().Value.Telemetry.PrometheusEnabled)
        {
            app.MapPrometheusScrapingEndpoint("/metrics");
        }
        app.Lifetime.ApplicationStarted.Register(() =>
        {
            var registry = app.Services.GetRequiredService<ListenerRegistry>();
            var options = app.Services.GetRequiredService<IOptions<ImapProxyOptions>>().Value;
            var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(ImapProxyHost));
            foreach (var listener in options.Listeners)
            {
                Log.Listening(logger, registry.GetEndPoint(listener.Name).ToString(), listener.Name, listener.Tls.ToString());
            }
        });
        return app;
    }

    /// <summary>
    /// Metrics always (Prometheus at /metrics on the admin endpoint; OTLP when an endpoint is configured); traces
    /// only when exported over OTLP, so an unobserved proxy pays nothing for spans.
    /// </summary>
    private static void AddOpenTelemetry(WebApplicationBuilder builder)
    {
        var telemetry = builder.Configuration.GetSection($"{ImapProxyOptions.SectionName}:Telemetry").Get<TelemetryOptions>() ?? new TelemetryOptions();
        var otel = builder.Services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService("imapproxy", serviceVersion: typeof(ImapProxyHost).Assembly.GetName().Version?.ToString(3)))
            .WithMetrics(metrics =>
            {
                metrics.AddMeter(ImapProxyMetrics.MeterName);
                if (telemetry.PrometheusEnabled)
                {
                    metrics.AddPrometheusExporter();
                }

                if (telemetry.OtlpEndpoint is not null)
                {
                    metrics.AddOtlpExporter(otlp => ConfigureOtlp(otlp, telemetry));
                }
            });
        if (telemetry.OtlpEndpoint is not null)
        {
            otel.WithTracing(tracing => tracing
                .AddSource(ImapProxyActivities.SourceName)
                .SetSampler(new ParentBasedSampler(new TraceIdRatioBasedSampler(telemetry.TraceSampleRatio)))
                .AddOtlpExporter(otlp => ConfigureOtlp(otlp, telemetry)));
        }
    }

    private static void ConfigureOtlp(OpenTelemetry.Exporter.OtlpExporterOptions otlp, TelemetryOptions telemetry)
    {
        otlp.Endpoint = new Uri(telemetry.OtlpEndpoint!);
        otlp.Protocol = telemetry.OtlpProtocol == "grpc" ? OpenTelemetry.Exporter.OtlpExportProtocol.Grpc : OpenTelemetry.Exporter.OtlpExportProtocol.HttpProtobuf;
    }

    private static void ConfigureListeners(KestrelServerOptions kestrel)
    {
        var services = kestrel.ApplicationServices;
        // Reading the options validates them: a bad key stops the start here with every error listed.
        var options = services.GetRequiredService<IOptions<ImapProxyOptions>>().Value;
        if (options.Admin.Enabled)
        {
            var registry = services.GetRequiredService<ListenerRegistry>();
            kestrel.Listen(IPAddress.Parse(options.Admin.Address), options.Admin.Port, listen =>
            {
                listen.Protocols = HttpProtocols.Http1;
                registry.Add(AdminListenerName, listen);
            });
        }
    }

    /// <summary>The host's server when the admin endpoint is off: no HTTP listener at all.</summary>
    private sealed class NoHttpServer : IServer
    {
        public IFeatureCollection Features { get; } = new FeatureCollection();

        public Task StartAsync<TContext>(IHttpApplication<TContext> application, CancellationToken cancellationToken)
            where TContext : notnull => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public void Dispose()
        {
        }
    }

    /// <summary>The socket engine of the IMAP sessions (disposed with the host: its threads stop).</summary>
    private static ISocketEngine CreateSocketEngine(IServiceProvider provider)
    {
        var performance = provider.GetRequiredService<IOptions<ImapProxyOptions>>().Value.Performance;
        var logger = provider.GetRequiredService<ILoggerFactory>().CreateLogger("ImapProxy.SocketEngine");
        if (performance.SocketEngine == SocketEngineKind.DotNet || (performance.SocketEngine == SocketEngineKind.Auto && !EpollEngine.IsSupported))
        {
            Log.SocketEngineSelected(logger, "dotnet", 0);
            return DotNetSocketEngine.Instance;
        }

        var threads = performance.IoThreads > 0 ? performance.IoThreads : Environment.ProcessorCount;
        Log.SocketEngineSelected(logger, "epoll", threads);
        return new EpollEngine(threads, performance.InlineIo, logger);
    }

    /// <summary>Connections to the Consul agent; a CA file, when given, is the only trust anchor for HTTPS.</summary>
    private static SocketsHttpHandler CreateConsulHandler(ConsulOptions consul)
    {
        var handler = new SocketsHttpHandler { PooledConnectionIdleTimeout = TimeSpan.FromMinutes(2) };
        if (consul.CaFile is not null)
        {
            var roots = new System.Security.Cryptography.X509Certificates.X509Certificate2Collection();
            roots.ImportFromPemFile(consul.CaFile);
            handler.SslOptions.CertificateChainPolicy = new System.Security.Cryptography.X509Certificates.X509ChainPolicy
            {
                TrustMode = System.Security.Cryptography.X509Certificates.X509ChainTrustMode.CustomRootTrust,
                RevocationMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck,
            };
            handler.SslOptions.CertificateChainPolicy.CustomTrustStore.AddRange(roots);
        }

        return handler;
    }

    private static string? FindConfigFile(string[] args)
    {
        for (var i = 0; i < args.Length; i++)
        {
            if (args[i] == "--config" && i + 1 < args.Length)
            {
                return args[i + 1];
            }

            if (args[i].StartsWith("--config=", StringComparison.Ordinal))
            {
                return args[i]["--config=".Length..];
            }
        }

        return null;
    }
}
