using System.Net;
using Microsoft.Extensions.Options;

namespace ImapProxy.Configuration;

/// <summary>Start-up validation: every problem is reported at once, each naming its configuration key.</summary>
internal sealed class ImapProxyOptionsValidator : IValidateOptions<ImapProxyOptions>
{
    private const string P = ImapProxyOptions.SectionName;

    public ValidateOptionsResult Validate(string? name, ImapProxyOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = new List<string>();

        if (options.Listeners.Count == 0)
        {
            errors.Add($"{P}:Listeners must list at least one IMAP listener.");
        }

        var needsCertificate = false;
        var names = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        for (var i = 0; i < options.Listeners.Count; i++)
        {
            var listener = options.Listeners[i];
            var key = $"{P}:Listeners:{i}";
            if (string.IsNullOrWhiteSpace(listener.Name) || !names.Add(listener.Name))
            {
                errors.Add($"{key}:Name must be set and unique (got '{listener.Name}').");
            }

            if (!IPAddress.TryParse(listener.Address, out _))
            {
                errors.Add($"{key}:Address must be an IP address (got '{listener.Address}').");
            }

            CheckPort(errors, $"{key}:Port", listener.Port, allowZero: true);
            needsCertificate |= listener.Tls != ListenerTls.None;
            if (listener.ProxyProtocol && listener.ProxyProtocolTrustedNetworks.Count == 0)
            {
                errors.Add($"{key}:ProxyProtocolTrustedNetworks must list the load balancers' CIDRs when ProxyProtocol is on.");
            }

            for (var n = 0; n < listener.ProxyProtocolTrustedNetworks.Count; n++)
            {
                if (!IPNetwork.TryParse(listener.ProxyProtocolTrustedNetworks[n], out _))
                {
                    errors.Add($"{key}:ProxyProtocolTrustedNetworks:{n} must be a CIDR (got '{listener.ProxyProtocolTrustedNetworks[n]}').");
                }
            }
        }

        if (needsCertificate)
        {
            CheckFile(errors, $"{P}:Tls:CertificateFile", options.Tls.CertificateFile, "a listener uses TLS");
            CheckFile(errors, $"{P}:Tls:KeyFile", options.Tls.KeyFile, "a listener uses TLS");
        }

        CheckPositive(errors, $"{P}:Tls:HandshakeTimeout", options.Tls.HandshakeTimeout);
        CheckPositive(errors, $"{P}:Tls:ReloadCheckInterval", options.Tls.ReloadCheckInterval);
        if (options.Tls.SessionTicketKeyFile is not null)
        {
            CheckFile(errors, $"{P}:Tls:SessionTicketKeyFile", options.Tls.SessionTicketKeyFile, "it is given");
            if (options.Performance.TlsEngine == TlsEngineKind.SslStream)
            {
                errors.Add($"{P}:Tls:SessionTicketKeyFile needs the proxy's own TLS; Performance:TlsEngine 'SslStream' cannot use it.");
            }
        }

        // Longer would only keep keys that open nothing: OpenSSL resumes no session older than two hours.
        if (options.Tls.SessionTicketKeyRotation < TimeSpan.FromMinutes(1) || options.Tls.SessionTicketKeyRotation > TimeSpan.FromHours(1))
        {
            errors.Add($"{P}:Tls:SessionTicketKeyRotation must be between 00:01:00 and 01:00:00 (got {options.Tls.SessionTicketKeyRotation}).");
        }

        if (options.Admin.Enabled)
        {
            if (!IPAddress.TryParse(options.Admin.Address, out _))
            {
                errors.Add($"{P}:Admin:Address must be an IP address (got '{options.Admin.Address}').");
            }

            CheckPort(errors, $"{P}:Admin:Port", options.Admin.Port, allowZero: true);
        }

        var preAuth = options.PreAuth;
        if (string.IsNullOrWhiteSpace(preAuth.Greeting) || preAuth.Greeting.Any(c => c < 0x20 || c > 0x7E))
        {
            errors.Add($"{P}:PreAuth:Greeting must be printable ASCII text.");
        }

        CheckPositive(errors, $"{P}:PreAuth:Timeout", preAuth.Timeout);
        CheckRange(errors, $"{P}:PreAuth:MaxLineLength", preAuth.MaxLineLength, 1024, 1024 * 1024);
        CheckRange(errors, $"{P}:PreAuth:MaxLiteralSize", preAuth.MaxLiteralSize, 256, 1024 * 1024);
        CheckRange(errors, $"{P}:PreAuth:MaxCommandSize", preAuth.MaxCommandSize, Math.Max(preAuth.MaxLineLength, preAuth.MaxLiteralSize), 16 * 1024 * 1024);
        CheckRange(errors, $"{P}:PreAuth:ErrorBudget", preAuth.ErrorBudget, 0, 1000);
        for (var i = 0; i < preAuth.TrustedNetworks.Count; i++)
        {
            if (!IPNetwork.TryParse(preAuth.TrustedNetworks[i], out _))
            {
                errors.Add($"{P}:PreAuth:TrustedNetworks:{i} must be a CIDR such as 10.0.0.0/8 (got '{preAuth.TrustedNetworks[i]}').");
            }
        }

        for (var i = 0; i < preAuth.ExtraCapabilities.Count; i++)
        {
            var capability = preAuth.ExtraCapabilities[i];
            if (string.IsNullOrEmpty(capability) || !capability.All(c => c > 0x20 && c < 0x7F && c is not ('(' or ')' or '{' or '"' or '\\' or ']' or '%' or '*')))
            {
                errors.Add($"{P}:PreAuth:ExtraCapabilities:{i} must be an IMAP atom (got '{capability}').");
            }
            else if (capability.Equals("LITERAL-", StringComparison.OrdinalIgnoreCase))
            {
                errors.Add($"{P}:PreAuth:ExtraCapabilities:{i}: LITERAL- cannot be advertised with LITERAL+.");
            }
            else if (capability.Equals("STARTTLS", StringComparison.OrdinalIgnoreCase) ||
                capability.Equals("LOGINDISABLED", StringComparison.OrdinalIgnoreCase) ||
                capability.StartsWith("AUTH=", StringComparison.OrdinalIgnoreCase))
            {
                errors.Add($"{P}:PreAuth:ExtraCapabilities:{i}: '{capability}' depends on the connection's state and is set by the proxy itself.");
            }
        }

        if (preAuth.AuthFailureDelay < TimeSpan.Zero || preAuth.AuthFailureMaxDelay < preAuth.AuthFailureDelay)
        {
            errors.Add($"{P}:PreAuth:AuthFailureDelay must be >= 0 and <= {P}:PreAuth:AuthFailureMaxDelay.");
        }

        CheckPositive(errors, $"{P}:PreAuth:AuthFailureWindow", preAuth.AuthFailureWindow);

        var backends = options.Backends;
        CheckPositive(errors, $"{P}:Backends:ConnectTimeout", backends.ConnectTimeout);
        CheckPositive(errors, $"{P}:Backends:LoginTimeout", backends.LoginTimeout);
        CheckPositive(errors, $"{P}:Backends:DnsRefresh", backends.DnsRefresh);
        CheckRange(errors, $"{P}:Backends:ProxyTtl", backends.ProxyTtl, 1, 64);
        CheckRange(errors, $"{P}:Backends:MaxResponseLine", backends.MaxResponseLine, 1024, 16 * 1024 * 1024);
        if (backends.CaFile is not null)
        {
            CheckFile(errors, $"{P}:Backends:CaFile", backends.CaFile, "it is set");
        }

        if (backends.MasterUser is not null)
        {
            CheckFile(errors, $"{P}:Backends:MasterPasswordFile", backends.MasterPasswordFile, "MasterUser is set");
        }

        if (backends.Static.Count == 0 && !options.Consul.Enabled)
        {
            errors.Add($"{P}:Backends:Static must list at least one backend (or enable {P}:Consul).");
        }

        ValidateDirectory(errors, options.Directory);
        if (options.Consul.Enabled)
        {
            ValidateConsul(errors, options.Consul);
        }

        var ids = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < backends.Static.Count; i++)
        {
            var backend = backends.Static[i];
            var key = $"{P}:Backends:Static:{i}";
            if (string.IsNullOrWhiteSpace(backend.Id) || !ids.Add(backend.Id))
            {
                errors.Add($"{key}:Id must be set and unique (got '{backend.Id}').");
            }

            if (string.IsNullOrWhiteSpace(backend.Host))
            {
                errors.Add($"{key}:Host must be set.");
            }

            CheckPort(errors, $"{key}:Port", backend.Port, allowZero: false);
            if (!(backend.Weight > 0) || double.IsInfinity(backend.Weight))
            {
                errors.Add($"{key}:Weight must be a positive number (got {backend.Weight}).");
            }
        }

        CheckPositive(errors, $"{P}:Session:ShutdownGrace", options.Session.ShutdownGrace);

        var telemetry = options.Telemetry;
        if (telemetry.OtlpEndpoint is not null && !Uri.TryCreate(telemetry.OtlpEndpoint, UriKind.Absolute, out _))
        {
            errors.Add($"{P}:Telemetry:OtlpEndpoint must be an absolute URL (got '{telemetry.OtlpEndpoint}').");
        }

        if (telemetry.OtlpProtocol is not ("grpc" or "http/protobuf"))
        {
            errors.Add($"{P}:Telemetry:OtlpProtocol must be 'grpc' or 'http/protobuf' (got '{telemetry.OtlpProtocol}').");
        }

        if (!(telemetry.TraceSampleRatio is >= 0 and <= 1))
        {
            errors.Add($"{P}:Telemetry:TraceSampleRatio must be between 0 and 1 (got {telemetry.TraceSampleRatio}).");
        }

        CheckRange(errors, $"{P}:Performance:IoThreads", options.Performance.IoThreads, 0, 256);
        if (options.Performance.SocketEngine == SocketEngineKind.Epoll && !Connections.Transport.Epoll.EpollEngine.IsSupported)
        {
            errors.Add($"{P}:Performance:SocketEngine 'Epoll' needs Linux; use 'Auto' or 'DotNet'.");
        }

        if (options.Performance.TlsEngine == TlsEngineKind.OpenSsl && !OperatingSystem.IsLinux())
        {
            errors.Add($"{P}:Performance:TlsEngine 'OpenSsl' needs Linux; use 'Auto' or 'SslStream'.");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    private static void ValidateDirectory(List<string> errors, DirectoryOptions directory)
    {
        CheckPositive(errors, $"{P}:Directory:PlacementCacheTtl", directory.PlacementCacheTtl);
        CheckPositive(errors, $"{P}:Directory:NegativeCacheTtl", directory.NegativeCacheTtl);
        CheckRange(errors, $"{P}:Directory:PlacementCacheSize", directory.PlacementCacheSize, 100, 100_000_000);
        CheckPositive(errors, $"{P}:Directory:PlacementRefreshInterval", directory.PlacementRefreshInterval);
        CheckRange(errors, $"{P}:Directory:PlacementRefreshRate", directory.PlacementRefreshRate, 1, 100_000);
        CheckPositive(errors, $"{P}:Directory:SuspectDuration", directory.SuspectDuration);
        if (directory.KickSpread < TimeSpan.Zero)
        {
            errors.Add($"{P}:Directory:KickSpread must not be negative.");
        }
    }

    private static void ValidateConsul(List<string> errors, ConsulOptions consul)
    {
        if (consul.Addresses.Count == 0)
        {
            errors.Add($"{P}:Consul:Addresses must list at least one agent address (e.g. http://127.0.0.1:8500).");
        }

        for (var i = 0; i < consul.Addresses.Count; i++)
        {
            if (!Uri.TryCreate(consul.Addresses[i], UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
            {
                errors.Add($"{P}:Consul:Addresses:{i} must be an http:// or https:// URL (got '{consul.Addresses[i]}').");
            }
        }

        if (string.IsNullOrWhiteSpace(consul.ServiceName))
        {
            errors.Add($"{P}:Consul:ServiceName must be set.");
        }

        if (string.IsNullOrWhiteSpace(consul.KeyPrefix) || consul.KeyPrefix.StartsWith('/') || consul.KeyPrefix.EndsWith('/'))
        {
            errors.Add($"{P}:Consul:KeyPrefix must be set, without leading or trailing '/' (got '{consul.KeyPrefix}').");
        }

        if (consul.WaitTime < TimeSpan.FromSeconds(1) || consul.WaitTime > TimeSpan.FromMinutes(10))
        {
            errors.Add($"{P}:Consul:WaitTime must be between 1 second and 10 minutes (got {consul.WaitTime}).");
        }

        CheckPositive(errors, $"{P}:Consul:RequestTimeout", consul.RequestTimeout);
        CheckPositive(errors, $"{P}:Consul:RetryDelay", consul.RetryDelay);
        if (consul.MaxRetryDelay < consul.RetryDelay)
        {
            errors.Add($"{P}:Consul:MaxRetryDelay must be >= {P}:Consul:RetryDelay.");
        }

        CheckPositive(errors, $"{P}:Consul:StaleAfter", consul.StaleAfter);
        if (consul.TokenFile is not null)
        {
            CheckFile(errors, $"{P}:Consul:TokenFile", consul.TokenFile, "it is set");
        }

        if (consul.CaFile is not null)
        {
            CheckFile(errors, $"{P}:Consul:CaFile", consul.CaFile, "it is set");
        }
    }

    private static void CheckPort(List<string> errors, string key, int port, bool allowZero)
    {
        if (port < (allowZero ? 0 : 1) || port > 65535)
        {
            errors.Add($"{key} must be a TCP port (got {port}).");
        }
    }

    private static void CheckRange(List<string> errors, string key, int value, int min, int max)
    {
        if (value < min || value > max)
        {
            errors.Add($"{key} must be between {min} and {max} (got {value}).");
        }
    }

    private static void CheckPositive(List<string> errors, string key, TimeSpan value)
    {
        if (value <= TimeSpan.Zero)
        {
            errors.Add($"{key} must be a positive duration (got {value}).");
        }
    }

    private static void CheckFile(List<string> errors, string key, string? path, string because)
    {
        if (string.IsNullOrWhiteSpace(path))
        {
            errors.Add($"{key} must be set because {because}.");
        }
        else if (!File.Exists(path))
        {
            errors.Add($"{key}: file '{path}' does not exist.");
        }
    }
}
