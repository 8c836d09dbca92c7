using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace ImapProxy.Telemetry;

/// <summary>
/// Every instrument of the proxy, on the meter "ImapProxy" (docs/telemetry.md lists them with their Prometheus
/// names). Tags are bounded: listener names, backend ids, enumerations; never a user name or a client address.
/// Up/down counters are always added and removed with the same tags.
/// </summary>
public sealed class ImapProxyMetrics
{
    public const string MeterName = "ImapProxy";

    public const string ListenerTag = "imapproxy.listener";
    public const string TlsModeTag = "imapproxy.listener.tls";
    public const string TlsResumedTag = "imapproxy.tls.resumed";
    public const string ResultTag = "imapproxy.login.result";
    public const string MechanismTag = "imapproxy.login.mechanism";
    public const string PhaseTag = "imapproxy.login.phase";
    public const string SourceTag = "imapproxy.directory.source";
    public const string BackendTag = "imapproxy.backend";
    public const string ErrorTypeTag = "error.type";
    public const string DirectionTag = "imapproxy.direction";
    public const string EndReasonTag = "imapproxy.session.end_reason";
    public const string KickReasonTag = "imapproxy.kick.reason";

    /// <summary>Login latency buckets: sub-millisecond cache hits up to multi-second backend stalls.</summary>
    private static readonly double[] s_latencyBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

    /// <summary>Session lengths: seconds (a failed client) to a day (an always-on IDLE).</summary>
    private static readonly double[] s_sessionBuckets = [1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400];

    // Observed, not measured: every login adds to these (see TaggedCounts).
    private readonly TaggedCounts<(string Listener, string TlsMode)> _connectionsAccepted = new(static key => [new(ListenerTag, key.Listener), new(TlsModeTag, key.TlsMode)]);
    private readonly TaggedCounts<string> _connectionsActive = new(static listener => [new(ListenerTag, listener)]);
    private readonly TaggedCounts<(string Result, string Mechanism)> _logins = new(static key => [new(ResultTag, key.Result), new(MechanismTag, key.Mechanism)]);
    private readonly TaggedCounts<string> _directoryLookups = new(static source => [new(SourceTag, source)]);
    private readonly TaggedCounts<string> _backendSessions = new(static backend => [new(BackendTag, backend)]);
    private readonly TaggedCounts<(string Listener, string Resumed)> _tlsHandshakes = new(static key => [new(ListenerTag, key.Listener), new(TlsResumedTag, key.Resumed)]);
    private readonly Counter<long> _tlsHandshakeFailures;
    private readonly Histogram<double> _loginDuration;
    private readonly Counter<long> _backendConnectErrors;
    private long _clientToBackend;
    private long _backendToClient;
    private readonly Histogram<double> _sessionDuration;
    private readonly Counter<long> _kicks;
    private readonly Histogram<double> _authFailureDelay;

    public ImapProxyMetrics(IMeterFactory meterFactory)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        Meter = meterFactory.Create(MeterName);
        Meter.CreateObservableCounter("imapproxy.connections.accepted", _connectionsAccepted.Observe, "{connection}", "Client connections accepted, by listener and its TLS mode.");
        Meter.CreateObservableUpDownCounter("imapproxy.connections.active", _connectionsActive.Observe, "{connection}", "Client connections open now (pre-auth and spliced), by listener.");
        Meter.CreateObservableCounter("imapproxy.tls.handshakes", _tlsHandshakes.Observe, "{handshake}", "Client TLS handshakes completed, by listener and whether a session ticket resumed them (true, false; unknown on the SslStream engine).");
        _tlsHandshakeFailures = Meter.CreateCounter<long>("imapproxy.tls.handshake.failures", "{handshake}", "Client STARTTLS handshakes that failed or timed out, by listener.");
        Meter.CreateObservableCounter("imapproxy.logins", _logins.Observe, "{login}", "Login attempts by result (success, auth_failed, unavailable, limit, proxy_loop) and mechanism.");
        _loginDuration = Meter.CreateHistogram("imapproxy.login.duration", "s", "Time spent in each phase of a login: directory, backend_connect, backend_auth, and total.", advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = s_latencyBuckets });
        Meter.CreateObservableCounter("imapproxy.directory.lookups", _directoryLookups.Observe, "{lookup}", "Directory answers by source: override, cache, consul (placement read), hash, static.");
        Meter.CreateObservableUpDownCounter("imapproxy.backend.sessions.active", _backendSessions.Observe, "{session}", "Spliced sessions open now, by backend.");
        _backendConnectErrors = Meter.CreateCounter<long>("imapproxy.backend.connect.errors", "{error}", "Failed hand-overs to a backend, by backend and error type.");
        // Observed, not added per read: the splice only adds to two totals, and the exporter reads them when it collects
        // (a counter's Add costs a tag lookup in the SDK's aggregator, measured at about 3% of the CPU per spliced NOOP).
        Meter.CreateObservableCounter("imapproxy.transferred", ObserveTransferred, "By", "Bytes spliced, by direction (client_to_backend, backend_to_client).");
        _sessionDuration = Meter.CreateHistogram("imapproxy.session.duration", "s", "Duration of spliced sessions, by end reason.", advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = s_sessionBuckets });
        _kicks = Meter.CreateCounter<long>("imapproxy.kicks", "{kick}", "Sessions ended by the proxy, by reason (moved, backend_disabled, shutdown).");
        _authFailureDelay = Meter.CreateHistogram("imapproxy.auth.failure.delay", "s", "Delay imposed before answering a failed login (throttling); its count is the number of failed logins delayed.", advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32] });
    }

    /// <summary>The meter, for instruments observed elsewhere (backend health, Consul state).</summary>
    public Meter Meter { get; }

    public void ConnectionOpened(string listener, string tlsMode)
    {
        _connectionsAccepted.Add((listener, tlsMode), 1);
        _connectionsActive.Add(listener, 1);
    }

    public void ConnectionClosed(string listener) => _connectionsActive.Add(listener, -1);

    /// <summary>A client's handshake completed; <paramref name="resumed"/> is null where the TLS engine does not tell.</summary>
    public void TlsHandshakeCompleted(string listener, bool? resumed) =>
        _tlsHandshakes.Add((listener, resumed switch { true => "true", false => "false", null => "unknown" }), 1);

    public void TlsHandshakeFailed(string listener) => _tlsHandshakeFailures.Add(1, new KeyValuePair<string, object?>(ListenerTag, listener));

    public void Login(string result, string mechanism) =>
        _logins.Add((result, mechanism), 1);

    public void LoginPhase(string phase, TimeSpan duration) =>
        _loginDuration.Record(duration.TotalSeconds, new KeyValuePair<string, object?>(PhaseTag, phase));

    public void DirectoryLookup(string source) => _directoryLookups.Add(source, 1);

    public void BackendSessionStarted(string backend) => _backendSessions.Add(backend, 1);

    public void BackendSessionEnded(string backend) => _backendSessions.Add(backend, -1);

    public void BackendConnectError(string backend, string errorType) =>
        _backendConnectErrors.Add(1, new KeyValuePair<string, object?>(BackendTag, backend), new KeyValuePair<string, object?>(ErrorTypeTag, errorType));

    public void ClientToBackend(long bytes) => Interlocked.Add(ref _clientToBackend, bytes);

    public void BackendToClient(long bytes) => Interlocked.Add(ref _backendToClient, bytes);

    public void SessionEnded(string reason, TimeSpan duration) =>
        _sessionDuration.Record(duration.TotalSeconds, new KeyValuePair<string, object?>(EndReasonTag, reason));

    public void Kicked(string reason) => _kicks.Add(1, new KeyValuePair<string, object?>(KickReasonTag, reason));

    public void AuthFailureDelayed(TimeSpan delay) => _authFailureDelay.Record(delay.TotalSeconds);

    private Measurement<long>[] ObserveTransferred() =>
    [
        new(Volatile.Read(ref _clientToBackend), new KeyValuePair<string, object?>(DirectionTag, "client_to_backend")),
        new(Volatile.Read(ref _backendToClient), new KeyValuePair<string, object?>(DirectionTag, "backend_to_client")),
    ];
}

/// <summary>The spans of a login (DESIGN §7): accept → hand-over, with its phases as children.</summary>
public static class ImapProxyActivities
{
    public const string SourceName = "ImapProxy";

    public static ActivitySource Source { get; } = new(SourceName, typeof(ImapProxyActivities).Assembly.GetName().Version?.ToString(3));
}
