namespace ImapProxy.Configuration;

/// <summary>The "ImapProxy" configuration section. Every key is documented in README.md with its default.</summary>
public sealed class ImapProxyOptions
{
    public const string SectionName = "ImapProxy";

    /// <summary>IMAP listeners. When none are configured: "imap" on 0.0.0.0:143 (STARTTLS) and "imaps" on 0.0.0.0:993.</summary>
    public List<ListenerOptions> Listeners { get; set; } = [];

    /// <summary>The listeners used when the configuration names none.</summary>
    public static IEnumerable<ListenerOptions> DefaultListeners =>
    [
        new() { Name = "imap", Address = "0.0.0.0", Port = 143, Tls = ListenerTls.StartTls },
        new() { Name = "imaps", Address = "0.0.0.0", Port = 993, Tls = ListenerTls.Implicit },
    ];

    public TlsOptions Tls { get; set; } = new();

    public AdminOptions Admin { get; set; } = new();

    public PreAuthOptions PreAuth { get; set; } = new();

    public BackendsOptions Backends { get; set; } = new();

    public DirectoryOptions Directory { get; set; } = new();

    public ConsulOptions Consul { get; set; } = new();

    public TelemetryOptions Telemetry { get; set; } = new();

    public PerformanceOptions Performance { get; set; } = new();

    public SessionOptions Session { get; set; } = new();
}

public enum ListenerTls
{
    /// <summary>Plain IMAP with STARTTLS offered (needs Tls certificate).</summary>
    StartTls,
    /// <summary>TLS from the first byte (RFC 8314, port 993).</summary>
    Implicit,
    /// <summary>Plain IMAP without STARTTLS: only for trusted networks (e.g. behind a TLS-terminating LB).</summary>
    None,
}

public sealed class ListenerOptions
{
    public string Name { get; set; } = "imap";

    public string Address { get; set; } = "0.0.0.0";

    /// <summary>TCP port; 0 picks a free port (tests).</summary>
    public int Port { get; set; } = 143;

    public ListenerTls Tls { get; set; } = ListenerTls.StartTls;

    /// <summary>Every connection starts with a PROXY protocol header (v1 or v2) from a load balancer.</summary>
    public bool ProxyProtocol { get; set; }

    /// <summary>CIDRs the PROXY header is accepted from; connections from elsewhere are closed.</summary>
    public List<string> ProxyProtocolTrustedNetworks { get; set; } = [];
}

public sealed class TlsOptions
{
    /// <summary>PEM certificate (leaf first, then intermediates).</summary>
    public string? CertificateFile { get; set; }

    /// <summary>PEM private key (PKCS#8, PKCS#1 or EC).</summary>
    public string? KeyFile { get; set; }

    /// <summary>Longest a client may take to complete a TLS handshake.</summary>
    public TimeSpan HandshakeTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How often (at most, on handshakes) the PEM files are checked for a new certificate.</summary>
    public TimeSpan ReloadCheckInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Keys that seal TLS session tickets, shared by every replica that reads the file, so a client resumes its
    /// session on any of them: one key per line, base64 of 80 random bytes (<c>openssl rand 80 | base64 -w0</c>), the
    /// key that seals new tickets first, older ones after it (they still open tickets). Checked for changes with the
    /// certificate. To rotate: add a new key second, move it first once every replica has it, drop the old one two
    /// hours later (see <c>Tls/SessionTicketKeys</c>). Needs the proxy's own TLS (<c>Performance:TlsEngine</c> Auto or
    /// OpenSsl, OpenSSL 3). Unset: keys of the process's own, rotated every <see cref="SessionTicketKeyRotation"/>.
    /// </summary>
    public string? SessionTicketKeyFile { get; set; }

    /// <summary>
    /// Without <see cref="SessionTicketKeyFile"/>: how often the process makes a new ticket key (1 minute to 1 hour).
    /// Tickets of the previous key still open, so a ticket resumes for one to two rotations (and never after two hours,
    /// OpenSSL's session lifetime); a leaked key exposes no older sessions.
    /// </summary>
    public TimeSpan SessionTicketKeyRotation { get; set; } = TimeSpan.FromHours(1);
}

public sealed class AdminOptions
{
    /// <summary>Serve the admin HTTP endpoint (/healthz, /readyz).</summary>
    public bool Enabled { get; set; } = true;

    public string Address { get; set; } = "127.0.0.1";

    /// <summary>HTTP port; 0 picks a free port (tests).</summary>
    public int Port { get; set; } = 8080;
}

public sealed class PreAuthOptions
{
    public string Greeting { get; set; } = "ImapProxy ready.";

    /// <summary>Longest a connection may stay unauthenticated.</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromMinutes(2);

    public int MaxLineLength { get; set; } = 16 * 1024;

    public int MaxLiteralSize { get; set; } = 4 * 1024;

    public int MaxCommandSize { get; set; } = 64 * 1024;

    /// <summary>BAD responses tolerated before "* BYE" and close.</summary>
    public int ErrorBudget { get; set; } = 10;

    /// <summary>CIDRs from which plaintext credentials are accepted without TLS.</summary>
    public List<string> TrustedNetworks { get; set; } = [];

    /// <summary>Capabilities added to the pre-authentication list.</summary>
    public List<string> ExtraCapabilities { get; set; } = [];

    /// <summary>Advertise IMAP4rev2 before login (only if every backend offers it).</summary>
    public bool AdvertiseImap4Rev2 { get; set; }

    /// <summary>Delay before the first failed-authentication answer; doubles with each further failure.</summary>
    public TimeSpan AuthFailureDelay { get; set; } = TimeSpan.FromSeconds(1);

    public TimeSpan AuthFailureMaxDelay { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>How long failures of a (client address, user) pair are remembered.</summary>
    public TimeSpan AuthFailureWindow { get; set; } = TimeSpan.FromMinutes(15);
}

public enum BackendTls
{
    None,
    StartTls,
    Implicit,
}

public enum BackendAuthentication
{
    /// <summary>AUTHENTICATE PLAIN when the backend offers it (with SASL-IR if offered), else LOGIN.</summary>
    Auto,
    /// <summary>Always the LOGIN command (arguments quoted or sent as literals, byte-safe).</summary>
    Login,
}

public sealed class BackendsOptions
{
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Longest the whole hand-over may take (greeting, ID, TLS, authentication).</summary>
    public TimeSpan LoginTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Send ID with x-originating-ip etc. (needs Dovecot login_trusted_networks to cover the proxy).</summary>
    public bool ForwardClientId { get; set; } = true;

    /// <summary>Hop limit sent as x-proxy-ttl; a client-provided TTL of 0 is refused.</summary>
    public int ProxyTtl { get; set; } = 7;

    /// <summary>CA bundle (PEM) to validate backend certificates; the system store when unset.</summary>
    public string? CaFile { get; set; }

    /// <summary>Log in as this master user with authzid = the client's user (Dovecot master users).</summary>
    public string? MasterUser { get; set; }

    /// <summary>File holding the master user's password (never put secrets in configuration).</summary>
    public string? MasterPasswordFile { get; set; }

    /// <summary>
    /// How long a backend host name's addresses are used before they are looked up again (in the background: logins go
    /// on with the last answer meanwhile). A name none of whose addresses takes a connection is looked up at the next login.
    /// </summary>
    public TimeSpan DnsRefresh { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Longest response line accepted from a backend during the hand-over.</summary>
    public int MaxResponseLine { get; set; } = 64 * 1024;

    public List<StaticBackendOptions> Static { get; set; } = [];
}

public sealed class StaticBackendOptions
{
    public string Id { get; set; } = "";

    public string Host { get; set; } = "";

    public int Port { get; set; } = 143;

    public double Weight { get; set; } = 100;

    public BackendTls Tls { get; set; } = BackendTls.None;

    /// <summary>Name expected in the backend certificate; Host when unset.</summary>
    public string? TlsServerName { get; set; }

    /// <summary>Send a PROXY v2 header first (Cyrus 3.12+, Dovecot haproxy listeners).</summary>
    public bool ProxyProtocol { get; set; }

    /// <summary>How the client's credentials are presented to this backend.</summary>
    public BackendAuthentication Authentication { get; set; } = BackendAuthentication.Auto;
}

public enum UserNormalization
{
    /// <summary>Trim and lower-case (invariant).</summary>
    Lowercase,
    /// <summary>Trim only.</summary>
    None,
}

public sealed class DirectoryOptions
{
    public UserNormalization UserNormalization { get; set; } = UserNormalization.Lowercase;

    /// <summary>How long a placement read from Consul is trusted before it is read again.</summary>
    public TimeSpan PlacementCacheTtl { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long "this user has no placement" is trusted.</summary>
    public TimeSpan NegativeCacheTtl { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Most placements kept in memory.</summary>
    public int PlacementCacheSize { get; set; } = 100_000;

    /// <summary>Every user must have a placement; unplaced users get NO [UNAVAILABLE] instead of a hashed backend.</summary>
    public bool PlacementRequired { get; set; }

    /// <summary>How often the placements of users with live sessions are re-read, to move them when they change.</summary>
    public TimeSpan PlacementRefreshInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Upper bound of placement reads per second spent on that refresh.</summary>
    public int PlacementRefreshRate { get; set; } = 200;

    /// <summary>How long a backend that refused a connection is left out of hashing, unless Consul says more.</summary>
    public TimeSpan SuspectDuration { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>Sessions to kick after a view change are spread over this window, so reconnects do not storm.</summary>
    public TimeSpan KickSpread { get; set; } = TimeSpan.FromSeconds(2);
}

public sealed class ConsulOptions
{
    /// <summary>Take backends, their states and user placements from Consul instead of Backends:Static.</summary>
    public bool Enabled { get; set; }

    /// <summary>Agent HTTP addresses, tried in order (the first that answers is used until it fails).</summary>
    public List<string> Addresses { get; set; } = [];

    /// <summary>ACL token (prefer TokenFile or the environment).</summary>
    public string? Token { get; set; }

    /// <summary>File holding the ACL token.</summary>
    public string? TokenFile { get; set; }

    public string? Datacenter { get; set; }

    /// <summary>PEM CA bundle for HTTPS agent addresses.</summary>
    public string? CaFile { get; set; }

    /// <summary>Catalog service whose instances are the IMAP backends.</summary>
    public string ServiceName { get; set; } = "imap-backend";

    /// <summary>KV prefix: users at &lt;prefix&gt;/users/&lt;user&gt;, backend states at &lt;prefix&gt;/backends/&lt;id&gt;, overrides at &lt;prefix&gt;/overrides/&lt;user&gt;.</summary>
    public string KeyPrefix { get; set; } = "imapproxy";

    /// <summary>Longest blocking-query wait; the HTTP timeout is set above it.</summary>
    public TimeSpan WaitTime { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Timeout of ordinary (non-blocking) requests such as a placement lookup.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>First retry delay of a failing watch; doubles with jitter up to MaxRetryDelay.</summary>
    public TimeSpan RetryDelay { get; set; } = TimeSpan.FromSeconds(1);

    public TimeSpan MaxRetryDelay { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>The view counts as stale (readiness detail, metric) when no watch succeeded for this long.</summary>
    public TimeSpan StaleAfter { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>This replica registers itself with the agent, for discovery by operators.</summary>
    public ConsulRegistrationOptions Registration { get; set; } = new();
}

public sealed class ConsulRegistrationOptions
{
    public bool Enabled { get; set; }

    public string ServiceName { get; set; } = "imapproxy";

    /// <summary>Unique per replica; default "&lt;ServiceName&gt;-&lt;host name&gt;-&lt;first listener port&gt;".</summary>
    public string? ServiceId { get; set; }

    /// <summary>Address advertised (e.g. the pod IP); default: the agent's node address.</summary>
    public string? Address { get; set; }

    /// <summary>Port advertised; default: the first IMAP listener's.</summary>
    public int? Port { get; set; }

    public List<string> Tags { get; set; } = [];

    /// <summary>URL of the HTTP check (usually this replica's /readyz); none when unset.</summary>
    public string? CheckUrl { get; set; }

    public TimeSpan CheckInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Consul removes a registration whose check stays critical this long (replicas that died hard).</summary>
    public TimeSpan DeregisterCriticalAfter { get; set; } = TimeSpan.FromMinutes(10);
}

public enum UserNameLogging
{
    /// <summary>The user name as given (control characters escaped).</summary>
    Plain,
    /// <summary>A stable pseudonym: the first 16 hex digits of SHA-256 of the normalised name.</summary>
    Hashed,
    /// <summary>Never written.</summary>
    Omitted,
}

public sealed class TelemetryOptions
{
    /// <summary>How user names appear in logs and traces.</summary>
    public UserNameLogging UserNames { get; set; } = UserNameLogging.Plain;

    /// <summary>OTLP endpoint (e.g. http://otel-collector:4317) for metrics and traces; off when unset.</summary>
    public string? OtlpEndpoint { get; set; }

    /// <summary>"grpc" or "http/protobuf".</summary>
    public string OtlpProtocol { get; set; } = "grpc";

    /// <summary>Share of logins traced (0 to 1), when traces are exported.</summary>
    public double TraceSampleRatio { get; set; } = 1.0;

    /// <summary>Serve Prometheus metrics at /metrics on the admin endpoint.</summary>
    public bool PrometheusEnabled { get; set; } = true;
}

public sealed class PerformanceOptions
{
    /// <summary>
    /// Run socket completions and Kestrel's pipe continuations inline on the I/O threads instead of hopping to
    /// the thread pool: the epoll engine's continuations, and .NET's (Kestrel's UnsafePreferInlineScheduling and
    /// DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS). Saves a thread hop per read and write; safe because nothing
    /// in the proxy blocks.
    /// </summary>
    public bool InlineIo { get; set; } = true;

    /// <summary>
    /// Let OpenSSL free each TLS connection's record buffers while the connection is idle (measured: 16 KB less per idle session)
    /// (SSL_MODE_RELEASE_BUFFERS, as nginx and HAProxy do). Linux only; see <c>Tls/OpenSslBuffers</c>.
    /// </summary>
    public bool ReleaseTlsBuffers { get; set; } = true;

    /// <summary>
    /// Which socket engine moves the IMAP sessions' bytes (client and backend sockets): <c>Auto</c> (the proxy's own
    /// epoll engine on Linux, .NET's sockets elsewhere), <c>Epoll</c>, or <c>DotNet</c>.
    /// </summary>
    public SocketEngineKind SocketEngine { get; set; } = SocketEngineKind.Auto;

    /// <summary>
    /// What makes the client side's TLS connections: <c>Auto</c> (the proxy's own OpenSSL context on Linux, where the
    /// runtime's OpenSSL can be reached; .NET's SslStream elsewhere), <c>OpenSsl</c> (the start fails where it cannot
    /// be reached), or <c>SslStream</c>. See <c>Tls/TlsServerContext</c>.
    /// </summary>
    public TlsEngineKind TlsEngine { get; set; } = TlsEngineKind.Auto;

    /// <summary>Threads of the epoll engine; 0: one per processor.</summary>
    public int IoThreads { get; set; }

    /// <summary>
    /// After bursts of TLS handshakes, give the C allocator's free pages back to the system (glibc's malloc_trim;
    /// see <c>Tls/AllocatorTrim</c>).
    /// </summary>
    public bool TrimNativeMemory { get; set; } = true;
}

public enum SocketEngineKind
{
    /// <summary>Epoll on Linux, DotNet elsewhere.</summary>
    Auto,

    /// <summary>The proxy's own epoll engine (Linux): no speculative receives, plaintext sessions spliced in event handlers.</summary>
    Epoll,

    /// <summary>.NET's socket engine.</summary>
    DotNet,
}

public enum TlsEngineKind
{
    /// <summary>OpenSsl where it can be used, SslStream elsewhere.</summary>
    Auto,

    /// <summary>The proxy's own OpenSSL server context and connections (Linux).</summary>
    OpenSsl,

    /// <summary>.NET's SslStream.</summary>
    SslStream,
}

public sealed class SessionOptions
{
    /// <summary>On shutdown, how long live sessions may continue before they are closed.</summary>
    public TimeSpan ShutdownGrace { get; set; } = TimeSpan.FromSeconds(30);
}
