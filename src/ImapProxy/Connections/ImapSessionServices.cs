using ImapProxy.Backends;
using ImapProxy.Configuration;
using ImapProxy.Directory;
using ImapProxy.Protocol.Parsing;
using ImapProxy.Protocol.PreAuth;
using ImapProxy.Telemetry;
using ImapProxy.Tls;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace ImapProxy.Connections;

/// <summary>What every session needs, resolved once: the handler passes this to each new session.</summary>
internal sealed class ImapSessionServices
{
    public ImapSessionServices(
        IOptions<ImapProxyOptions> options,
        IBackendDirectory directory,
        BackendConnector connector,
        AuthFailureThrottle throttle,
        TrustedNetworks trustedNetworks,
        ServerCertificateProvider certificates,
        TlsBufferPolicy tlsBuffers,
        ShutdownCoordinator shutdown,
        SessionRegistry sessions,
        ImapProxyMetrics metrics,
        TimeProvider timeProvider,
        ILogger<ClientSession> logger,
        SessionLogScopes logScopes)
    {
        Options = options.Value;
        Directory = directory;
        Connector = connector;
        Throttle = throttle;
        TrustedNetworks = trustedNetworks;
        Certificates = certificates;
        TlsBuffers = tlsBuffers;
        Shutdown = shutdown;
        Sessions = sessions;
        Metrics = metrics;
        TimeProvider = timeProvider;
        Logger = logger;
        LogScopes = logScopes;
        var preAuth = Options.PreAuth;
        PreAuthSettings = new PreAuthSettings(
            new ImapParserLimits(preAuth.MaxLineLength, preAuth.MaxLiteralSize, preAuth.MaxCommandSize),
            preAuth.Greeting,
            preAuth.ErrorBudget,
            preAuth.ExtraCapabilities,
            preAuth.AdvertiseImap4Rev2,
            "ImapProxy",
            typeof(ImapSessionServices).Assembly.GetName().Version?.ToString(3) ?? "0.0.0");
    }

    public ImapProxyOptions Options { get; }

    public PreAuthSettings PreAuthSettings { get; }

    public IBackendDirectory Directory { get; }

    public BackendConnector Connector { get; }

    public AuthFailureThrottle Throttle { get; }

    public TrustedNetworks TrustedNetworks { get; }

    public ServerCertificateProvider Certificates { get; }

    public TlsBufferPolicy TlsBuffers { get; }

    public ShutdownCoordinator Shutdown { get; }

    public SessionRegistry Sessions { get; }

    public ImapProxyMetrics Metrics { get; }

    public TimeProvider TimeProvider { get; }

    public ILogger Logger { get; }

    /// <summary>Whether a session opens its log scope (only when a log line would show it).</summary>
    public SessionLogScopes LogScopes { get; }
}
