using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using ImapProxy.Configuration;
using ImapProxy.Telemetry;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace ImapProxy.Tls;

/// <summary>
/// What a client's TLS handshake is made with: the proxy's own OpenSSL context, when <c>Performance:TlsEngine</c>
/// gives one, and the SslStream options (always there: the fallback, and the certificate's details for the log).
/// </summary>
internal sealed record ServerTls(SslServerAuthenticationOptions Options, TlsServerContext? Context);

/// <summary>
/// Server TLS built from the PEM files. The files are checked for changes at most every few seconds,
/// when a handshake asks, and reloaded without a restart (Kubernetes Secret updates). A broken new file keeps
/// the last good certificate in service.
/// </summary>
internal sealed class ServerCertificateProvider : IDisposable
{
    private readonly TlsOptions _options;
    private readonly TlsEngineKind _engine;
    private readonly bool _releaseBuffers;
    private readonly ILogger<ServerCertificateProvider> _logger;
    private readonly TimeProvider _timeProvider;
    private readonly Lock _reloadLock = new();
    private SessionTicketKeys? _rotatingTicketKeys;
    private volatile Loaded? _current;
    private long _nextCheck;

    public ServerCertificateProvider(IOptions<ImapProxyOptions> options, ILogger<ServerCertificateProvider> logger, TimeProvider timeProvider)
    {
        _options = options.Value.Tls;
        _engine = options.Value.Performance.TlsEngine;
        _releaseBuffers = options.Value.Performance.ReleaseTlsBuffers;
        _logger = logger;
        _timeProvider = timeProvider;
    }

    public bool IsConfigured => !string.IsNullOrEmpty(_options.CertificateFile) && !string.IsNullOrEmpty(_options.KeyFile);

    public TimeSpan HandshakeTimeout => _options.HandshakeTimeout;

    /// <summary>Loads the certificate once at start-up so a bad file fails the start, not the first client.</summary>
    public void EnsureLoaded()
    {
        if (IsConfigured)
        {
            Log.TlsEngineSelected(_logger, GetServer().Context is null ? "SslStream" : "OpenSSL, the proxy's own context");
        }
    }

    /// <summary>The current certificate's TLS, reloaded first if the files changed.</summary>
    public ServerTls GetServer()
    {
        var current = _current;
        var now = _timeProvider.GetTimestamp();
        if (current is not null && now < Interlocked.Read(ref _nextCheck))
        {
            return current.Server;
        }

        lock (_reloadLock)
        {
            current = _current;
            if (current is not null && now < _nextCheck)
            {
                return current.Server;
            }

            _nextCheck = now + (long)(_options.ReloadCheckInterval.TotalSeconds * _timeProvider.TimestampFrequency);
            try
            {
                var stamp = Stamp();
                if (current is not null && current.Stamp == stamp)
                {
                    return current.Server;
                }

                // The previous certificate and context are not disposed: handshakes in flight may still be using them
                // (each connection of a context holds its own reference on it; the handle's finalizer drops this one).
                var loaded = Load(stamp);
                _current = loaded;
                Log.CertificateLoaded(_logger, loaded.Certificate.Subject, loaded.Certificate.NotAfter, loaded.Certificate.Thumbprint);
                return loaded.Server;
            }
            catch (Exception ex) when (current is not null && ex is IOException or System.Security.Cryptography.CryptographicException or ArgumentException or FormatException or PlatformNotSupportedException or UnauthorizedAccessException)
            {
                Log.CertificateReloadFailed(_logger, ex);
                return current.Server;
            }
        }
    }

    public void Dispose()
    {
        _current?.Certificate.Dispose();
        _current?.Server.Context?.Dispose();
    }

    /// <summary>
    /// A hash of the files' contents (the certificate's, its key's, the session ticket keys' when given). Timestamps
    /// would not do: a Kubernetes Secret volume swaps a symlinked directory, and the file paths themselves never change.
    /// </summary>
    private string Stamp()
    {
        using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        hash.AppendData(File.ReadAllBytes(_options.CertificateFile!));
        hash.AppendData(File.ReadAllBytes(_options.KeyFile!));
        if (_options.SessionTicketKeyFile is { } ticketKeyFile)
        {
            hash.AppendData(File.ReadAllBytes(ticketKeyFile));
        }

        return Convert.ToHexString(hash.GetHashAndReset());
    }

    private Loaded Load(string stamp)
    {
        var certificate = X509Certificate2.CreateFromPemFile(_options.CertificateFile!, _options.KeyFile!);
        var chain = new X509Certificate2Collection();
        chain.ImportFromPemFile(_options.CertificateFile!);
        var intermediates = new X509Certificate2Collection();
        foreach (var extra in chain)
        {
            if (extra.Thumbprint != certificate.Thumbprint)
            {
                intermediates.Add(extra);
            }
        }

        var options = new SslServerAuthenticationOptions
        {
            ServerCertificateContext = SslStreamCertificateContext.Create(certificate, intermediates, offline: true),
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            ClientCertificateRequired = false,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            AllowRenegotiation = false,
        };

        return new Loaded(certificate, new ServerTls(options, LoadContext()), stamp);
    }

    /// <summary>
    /// The context of the proxy's own, or null for SslStream. The files were just read and checked by the runtime;
    /// OpenSSL reads them again. Where it cannot be reached or refuses them, Auto keeps SslStream (and says why, on
    /// Linux) and OpenSsl fails: the start, or the reload, which keeps the last context. A session ticket key file
    /// that is not one fails either way (<see cref="FormatException"/>); one that OpenSSL cannot take (1.1.1) is like
    /// files it refuses.
    /// </summary>
    private TlsServerContext? LoadContext()
    {
        if (_engine == TlsEngineKind.SslStream || (_engine == TlsEngineKind.Auto && !OperatingSystem.IsLinux()))
        {
            if (_options.SessionTicketKeyFile is not null)
            {
                Log.SessionTicketKeysUnused(_logger, "client TLS is on SslStream here");
            }

            return null;
        }

        // The rotating keys outlive each context (made once, under the reload lock), and are only made once the
        // runtime has loaded OpenSSL (the certificate above did): OpenSslNative looks the library up once.
        var keysUnavailable = OpenSslNative.TicketKeysUnavailableReason;
        var ticketKeys = _options.SessionTicketKeyFile is { } ticketKeyFile
            ? SessionTicketKeys.FromFile(ticketKeyFile) // Create refuses it, with the reason, when keysUnavailable
            : keysUnavailable is null
                ? _rotatingTicketKeys ??= SessionTicketKeys.Rotating(_options.SessionTicketKeyRotation, _timeProvider)
                : null;
        try
        {
            var context = TlsServerContext.Create(_options.CertificateFile!, _options.KeyFile!, _releaseBuffers, ticketKeys);
            if (ticketKeys is not null)
            {
                Log.SessionTicketKeysInUse(_logger, ticketKeys.Source);
            }
            else
            {
                Log.SessionTicketKeysUnused(_logger, keysUnavailable!);
            }

            return context;
        }
        catch (Exception ex) when (_engine == TlsEngineKind.Auto && ex is System.Security.Cryptography.CryptographicException or PlatformNotSupportedException)
        {
            Log.TlsContextFallback(_logger, ex.Message);
            return null;
        }
    }

    private sealed record Loaded(X509Certificate2 Certificate, ServerTls Server, string Stamp);
}
