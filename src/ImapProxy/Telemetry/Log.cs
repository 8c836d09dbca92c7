using System.Net;
using Microsoft.Extensions.Logging;

namespace ImapProxy.Telemetry;

/// <summary>Every log message of the proxy, with fixed event ids. No message takes a password or SASL data.</summary>
internal static partial class Log
{
    private static readonly Func<ILogger, string, IDisposable?> s_sessionScope =
        LoggerMessage.DefineScope<string>("session {SessionId}");

    /// <summary>Every line a session logs carries its id (the x-session-id the backend logs too).</summary>
    public static IDisposable? SessionScope(ILogger logger, string sessionId) => s_sessionScope(logger, sessionId);

    [LoggerMessage(1, LogLevel.Information, "Listening for IMAP on {Endpoint} ({Listener}, TLS {Tls})")]
    public static partial void Listening(ILogger logger, string endpoint, string listener, string tls);

    [LoggerMessage(2, LogLevel.Information, "TLS certificate loaded: {Subject}, expires {NotAfter:u}, thumbprint {Thumbprint}")]
    public static partial void CertificateLoaded(ILogger logger, string subject, DateTime notAfter, string thumbprint);

    [LoggerMessage(3, LogLevel.Error, "TLS reload failed (certificate, key or session ticket keys); the previous ones stay in use")]
    public static partial void CertificateReloadFailed(ILogger logger, Exception exception);

    [LoggerMessage(10, LogLevel.Debug, "Connection from {Client} on {Listener}")]
    public static partial void ConnectionAccepted(ILogger logger, IPEndPoint client, string listener);

    [LoggerMessage(11, LogLevel.Debug, "TLS handshake failed for {Client}: {Reason}")]
    public static partial void TlsHandshakeFailed(ILogger logger, IPEndPoint client, string reason);

    [LoggerMessage(12, LogLevel.Information, "Login failed for {User} from {Client} on {Backend}: {Failure} ({Detail})")]
    public static partial void LoginFailed(ILogger logger, string user, IPEndPoint client, string backend, string failure, string detail);

    [LoggerMessage(13, LogLevel.Debug, "Login of {User} from {Client} handed over to {Backend} in {ElapsedMs:F1} ms")]
    public static partial void LoginSucceeded(ILogger logger, string user, IPEndPoint client, string backend, double elapsedMs);

    [LoggerMessage(14, LogLevel.Information,
        "Session ended: user={User} client={Client} backend={Backend} session={SessionId} reason={Reason} bytes_in={BytesIn} bytes_out={BytesOut} duration={DurationSeconds:F3}s")]
    public static partial void SessionEnded(ILogger logger, string user, IPEndPoint client, string backend, string sessionId, string reason, long bytesIn, long bytesOut, double durationSeconds);

    [LoggerMessage(15, LogLevel.Warning, "Unexpected error in session from {Client}")]
    public static partial void SessionError(ILogger logger, IPEndPoint client, Exception exception);

    [LoggerMessage(20, LogLevel.Warning, "Backend {Backend} unavailable: {Detail}")]
    public static partial void BackendUnavailable(ILogger logger, string backend, string detail);

    [LoggerMessage(21, LogLevel.Warning, "Refusing login: proxy hop limit (x-proxy-ttl) reached, possible proxy loop, client {Client}")]
    public static partial void ProxyLoop(ILogger logger, IPEndPoint client);

    [LoggerMessage(30, LogLevel.Warning, "Consul watch of {Watch} failed: {Reason}; retrying in about {RetrySeconds:F1}s with the last view")]
    public static partial void ConsulWatchFailed(ILogger logger, string watch, string reason, double retrySeconds);

    [LoggerMessage(31, LogLevel.Information, "Consul watch of {Watch} recovered")]
    public static partial void ConsulRecovered(ILogger logger, string watch);

    [LoggerMessage(32, LogLevel.Information, "Directory view changed: {Backends} backends, candidates [{Candidates}] ({CandidateCount})")]
    public static partial void DirectoryViewChanged(ILogger logger, int backends, int candidateCount, string candidates);

    [LoggerMessage(33, LogLevel.Warning, "Ignoring unreadable backend state for {Backend} (expected \"active\", \"draining\", \"disabled\" or JSON)")]
    public static partial void BadBackendState(ILogger logger, string backend);

    [LoggerMessage(34, LogLevel.Warning, "Placement lookup for {User} failed: {Reason}")]
    public static partial void PlacementLookupFailed(ILogger logger, string user, string reason);

    [LoggerMessage(35, LogLevel.Information, "Kicking session of {User} on {Backend}: {Reason}")]
    public static partial void SessionKicked(ILogger logger, string user, string backend, string reason);

    [LoggerMessage(36, LogLevel.Information, "Backend {Backend} refused the connection; suspected for a while, retrying {User} elsewhere")]
    public static partial void BackendSuspected(ILogger logger, string backend, string user);

    [LoggerMessage(37, LogLevel.Warning, "Consul lists no instance of service {Service}; keeping the last view (a deliberate removal of every backend must disable them first)")]
    public static partial void EmptyCatalogIgnored(ILogger logger, string service);

    [LoggerMessage(38, LogLevel.Information, "Registered in Consul as {ServiceId} (service {Service})")]
    public static partial void ConsulRegistered(ILogger logger, string serviceId, string service);

    [LoggerMessage(39, LogLevel.Warning, "Consul registration of {ServiceId} failed: {Reason}")]
    public static partial void ConsulRegistrationFailed(ILogger logger, string serviceId, string reason);

    [LoggerMessage(40, LogLevel.Information, "Deregistered {ServiceId} from Consul")]
    public static partial void ConsulDeregistered(ILogger logger, string serviceId);

    [LoggerMessage(16, LogLevel.Warning, "Closing connection from {Peer} on {Listener}: PROXY protocol {Reason}")]
    public static partial void ProxyHeaderRejected(ILogger logger, string peer, string listener, string reason);

    [LoggerMessage(17, LogLevel.Warning, "Accepting a connection on {Endpoint} failed: {Error}")]
    public static partial void AcceptFailed(ILogger logger, string endpoint, string error);

    [LoggerMessage(42, LogLevel.Warning, "TLS record buffers cannot be released while idle ({Reason}); idle TLS connections keep their record buffers (about 16 KB each, measured)")]
    public static partial void TlsBuffersNotReleased(ILogger logger, string reason);

    [LoggerMessage(43, LogLevel.Critical, "Socket engine thread {Thread} stopped: {Reason}; the sessions on it no longer move")]
    public static partial void EngineFailed(ILogger logger, string thread, string reason);

    [LoggerMessage(44, LogLevel.Error, "Socket engine thread {Thread}: an event handler failed; the thread goes on")]
    public static partial void EngineHandlerFailed(ILogger logger, string thread, Exception exception);

    [LoggerMessage(45, LogLevel.Information, "Socket engine: {Engine}, {Threads} I/O threads")]
    public static partial void SocketEngineSelected(ILogger logger, string engine, int threads);

    [LoggerMessage(46, LogLevel.Debug, "Gave the allocator's free pages back after TLS handshakes in {ElapsedMs:F1} ms")]
    public static partial void AllocatorTrimmed(ILogger logger, double elapsedMs);

    [LoggerMessage(47, LogLevel.Error, "Connection from {Peer} failed outside its session")]
    public static partial void ConnectionFailed(ILogger logger, string peer, Exception exception);

    [LoggerMessage(48, LogLevel.Warning, "{Count} IMAP connections had not ended a second after they were aborted at shutdown")]
    public static partial void ConnectionsLeftAtShutdown(ILogger logger, int count);

    [LoggerMessage(49, LogLevel.Information, "Client TLS: {Engine}")]
    public static partial void TlsEngineSelected(ILogger logger, string engine);

    [LoggerMessage(50, LogLevel.Warning, "Client TLS on SslStream instead of the proxy's own OpenSSL context: {Reason}")]
    public static partial void TlsContextFallback(ILogger logger, string reason);

    [LoggerMessage(51, LogLevel.Information, "Client TLS session tickets are sealed with keys from {Source}")]
    public static partial void SessionTicketKeysInUse(ILogger logger, string source);

    [LoggerMessage(52, LogLevel.Warning, "Client TLS session tickets are sealed with OpenSSL's own key of each context (not rotated, not shared by replicas): {Reason}")]
    public static partial void SessionTicketKeysUnused(ILogger logger, string reason);
}
