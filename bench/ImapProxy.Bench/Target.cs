using System.Net;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

namespace ImapProxy.Bench;

/// <summary>Where and how to connect, plus every LOGIN command encoded once up front.</summary>
internal sealed class Target
{
    private readonly byte[][] _logins;

    public Target(BenchOptions options)
    {
        Options = options;
        IPAddress address = IPAddress.TryParse(options.Host, out IPAddress? parsed)
            ? parsed
            : Dns.GetHostAddresses(options.Host)[0];
        EndPoint = new IPEndPoint(address, options.Port);
        TimeoutTicks = MeasureWindow.SecondsToTicks(options.TimeoutSeconds);

        Tls = options.Tls ? CreateTlsOptions(options) : null;

        _logins = new byte[options.Users][];
        for (int i = 0; i < options.Users; i++)
        {
            _logins[i] = ImapCommands.Login(options.UserName(i + 1), options.Password(i + 1));
        }

        Select = ImapCommands.Select(options.Mailbox);
    }

    public BenchOptions Options { get; }

    public EndPoint EndPoint { get; }

    public SslClientAuthenticationOptions? Tls { get; }

    public long TimeoutTicks { get; }

    public ReadOnlyMemory<byte> Select { get; }

    public int Users => _logins.Length;

    /// <summary>The LOGIN command for the user with zero-based index <paramref name="user"/>.</summary>
    public ReadOnlyMemory<byte> Login(int user) => _logins[user];

    public Task<ImapConnection> OpenAsync(byte[] buffer, Watchdog watchdog, int slot) =>
        ImapConnection.OpenAsync(EndPoint, Tls, buffer, watchdog, slot, TimeoutTicks);

    /// <summary>Connects and logs in; throws (after disposing the connection) if either fails.</summary>
    public async Task<ImapConnection> OpenLoggedInAsync(byte[] buffer, Watchdog watchdog, int slot, int user)
    {
        ImapConnection connection = await OpenAsync(buffer, watchdog, slot).ConfigureAwait(false);
        try
        {
            Reply reply = await connection.CommandAsync(Login(user), ImapCommands.LoginTag, TimeoutTicks).ConfigureAwait(false);
            if (reply != Reply.Ok)
            {
                throw new BenchException($"LOGIN as {Options.UserName(user + 1)}: {connection.Describe(reply)}");
            }

            return connection;
        }
        catch (Exception ex)
        {
            connection.Dispose();
            if (connection.TimedOut)
            {
                throw new BenchException("LOGIN timed out", ex);
            }

            throw;
        }
    }

    /// <summary>LOGOUT, then close. Returns false (never throws) if the server did not answer properly.</summary>
    public async Task<bool> LogoutAsync(ImapConnection connection)
    {
        try
        {
            Reply reply = await connection.CommandAsync(ImapCommands.Logout, ImapCommands.LogoutTag, TimeoutTicks).ConfigureAwait(false);
            return reply is Reply.Ok or Reply.Closed;
        }
        catch (Exception ex) when (Failures.IsConnectionFailure(ex))
        {
            return false;
        }
        finally
        {
            connection.Dispose();
        }
    }

    // One options instance for every connection: SslStream's client session cache is keyed by the target host and
    // these options, so reusing them lets TLS resumption happen where the server offers it.
    private static SslClientAuthenticationOptions CreateTlsOptions(BenchOptions options)
    {
        var tls = new SslClientAuthenticationOptions { TargetHost = options.TlsHost };
        if (options.CaCertFile is null)
        {
            // Benchmark targets on 127.0.0.1 use throwaway self-signed certificates: the handshake's cost is
            // what is measured, not trust.
#pragma warning disable CA5359 // Do not disable certificate validation
            tls.RemoteCertificateValidationCallback = AcceptAnyCertificate;
#pragma warning restore CA5359
            return tls;
        }

        var policy = new X509ChainPolicy
        {
            TrustMode = X509ChainTrustMode.CustomRootTrust,
            RevocationMode = X509RevocationMode.NoCheck,
            DisableCertificateDownloads = true,
        };
        policy.CustomTrustStore.Add(X509CertificateLoader.LoadCertificateFromFile(options.CaCertFile));
        tls.CertificateChainPolicy = policy;
        return tls;
    }

    private static bool AcceptAnyCertificate(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors) => true;
}
