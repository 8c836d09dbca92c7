using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using ImapProxy.Configuration;
using ImapProxy.Telemetry;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace ImapProxy.Tls;

/// <summary>
/// Server TLS options built from the PEM files. The files are checked for changes at most every few seconds,
/// when a handshake asks, and reloaded without a restart (Kubernetes Secret updates). A broken new file keeps
/// the last good certificate in service.
/// </summary>
internal sealed class ServerCertificateProvider : IDisposable
{
    private readonly TlsOptions _options;
    private readonly ILogger<ServerCertificateProvider> _logger;
    private readonly TimeProvider _timeProvider;
    private readonly Lock _reloadLock = new();
    private volatile Loaded? _current;
    private long _nextCheck;

    public ServerCertificateProvider(IOptions<ImapProxyOptions> options, ILogger<ServerCertificateProvider> logger, TimeProvider timeProvider)
    {
        _options = options.Value.Tls;
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
            _ = GetServerOptions();
        }
    }

    public SslServerAuthenticationOptions GetServerOptions()
    {
        var current = _current;
        var now = _timeProvider.GetTimestamp();
        if (current is not null && now < Interlocked.Read(ref _nextCheck))
        {
            return current.Options;
        }

        lock (_reloadLock)
        {
            current = _current;
            if (current is not null && now < _nextCheck)
            {
                return current.Options;
            }

            _nextCheck = now + (long)(_options.ReloadCheckInterval.TotalSeconds * _timeProvider.TimestampFrequency);
            try
            {
                var stamp = Stamp();
                if (current is not null && current.Stamp == stamp)
                {
                    return current.Options;
                }

                // The previous certificate is not disposed: handshakes in flight may still be using it.
                var loaded = Load(stamp);
                _current = loaded;
                Log.CertificateLoaded(_logger, loaded.Certificate.Subject, loaded.Certificate.NotAfter, loaded.Certificate.Thumbprint);
                return loaded.Options;
            }
            catch (Exception ex) when (current is not null && ex is IOException or System.Security.Cryptography.CryptographicException or ArgumentException)
            {
                Log.CertificateReloadFailed(_logger, ex);
                return current.Options;
            }
        }
    }

    public void Dispose() => _current?.Certificate.Dispose();

    /// <summary>
    /// A hash of both files' contents. Timestamps would not do: a Kubernetes Secret volume swaps a symlinked
    /// directory, and the file paths themselves never change.
    /// </summary>
    private string Stamp()
    {
        using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        hash.AppendData(File.ReadAllBytes(_options.CertificateFile!));
        hash.AppendData(File.ReadAllBytes(_options.KeyFile!));
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
        return new Loaded(certificate, options, stamp);
    }

    private sealed record Loaded(X509Certificate2 Certificate, SslServerAuthenticationOptions Options, string Stamp);
}
