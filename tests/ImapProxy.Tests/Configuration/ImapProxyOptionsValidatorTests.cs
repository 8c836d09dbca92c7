using ImapProxy.Configuration;
using Xunit;

namespace ImapProxy.Tests.Configuration;

public class ImapProxyOptionsValidatorTests
{
    private static ImapProxyOptions Valid() => new()
    {
        Listeners = [new ListenerOptions { Name = "imap", Address = "127.0.0.1", Port = 1143, Tls = ListenerTls.None }],
        Backends = new BackendsOptions { Static = [new StaticBackendOptions { Id = "b1", Host = "127.0.0.1", Port = 143 }] },
    };

    private static string[] Errors(ImapProxyOptions options) =>
        new ImapProxyOptionsValidator().Validate(null, options).Failures?.ToArray() ?? [];

    [Fact]
    public void Validate_MinimalConfiguration_Succeeds()
    {
        Assert.Empty(Errors(Valid()));
    }

    [Fact]
    public void Validate_ReportsEveryProblemAtOnce_NamingTheKey()
    {
        var options = Valid();
        options.Listeners.Add(new ListenerOptions { Name = "imap", Address = "not-an-ip", Port = 70000, Tls = ListenerTls.Implicit });
        options.PreAuth.TrustedNetworks.Add("10.0.0.0/33");
        options.PreAuth.ExtraCapabilities.Add("LITERAL-");
        options.Backends.Static.Add(new StaticBackendOptions { Id = "b1", Host = "", Port = 0, Weight = -1 });

        var errors = Errors(options);

        Assert.Contains(errors, e => e.StartsWith("ImapProxy:Listeners:1:Name", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("ImapProxy:Listeners:1:Address", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("ImapProxy:Listeners:1:Port", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("ImapProxy:Tls:CertificateFile", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("ImapProxy:Tls:KeyFile", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("ImapProxy:PreAuth:TrustedNetworks:0", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("ImapProxy:PreAuth:ExtraCapabilities:0", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("ImapProxy:Backends:Static:1:Id", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("ImapProxy:Backends:Static:1:Host", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("ImapProxy:Backends:Static:1:Port", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("ImapProxy:Backends:Static:1:Weight", StringComparison.Ordinal));
    }

    [Fact]
    public void Validate_MasterUserWithoutPasswordFile_Fails()
    {
        var options = Valid();
        options.Backends.MasterUser = "master";
        Assert.Contains(Errors(options), e => e.StartsWith("ImapProxy:Backends:MasterPasswordFile", StringComparison.Ordinal));
    }

    [Fact]
    public void Validate_SessionTicketKeys_NeedAFileThatExists_TheProxysOwnTls_AndASaneRotation()
    {
        var options = Valid();
        options.Tls.SessionTicketKeyFile = "/nonexistent/ticket-keys";
        options.Tls.SessionTicketKeyRotation = TimeSpan.FromSeconds(30);
        options.Performance.TlsEngine = TlsEngineKind.SslStream;

        var errors = Errors(options);

        Assert.Contains(errors, e => e.StartsWith("ImapProxy:Tls:SessionTicketKeyFile: file '/nonexistent/ticket-keys' does not exist", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("ImapProxy:Tls:SessionTicketKeyFile needs the proxy's own TLS", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("ImapProxy:Tls:SessionTicketKeyRotation must be between", StringComparison.Ordinal));

        options.Tls.SessionTicketKeyRotation = TimeSpan.FromHours(2);
        Assert.Contains(Errors(options), e => e.StartsWith("ImapProxy:Tls:SessionTicketKeyRotation must be between", StringComparison.Ordinal));
        options.Tls.SessionTicketKeyRotation = TimeSpan.FromHours(1);
        options.Tls.SessionTicketKeyFile = null;
        Assert.Empty(Errors(options));
    }

    [Fact]
    public void Validate_LimitsOutOfRange_Fail()
    {
        var options = Valid();
        options.PreAuth.MaxLineLength = 10;
        options.PreAuth.Timeout = TimeSpan.Zero;
        options.Performance.IoThreads = -1;
        var errors = Errors(options);
        Assert.Contains(errors, e => e.StartsWith("ImapProxy:PreAuth:MaxLineLength", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("ImapProxy:PreAuth:Timeout", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("ImapProxy:Performance:IoThreads", StringComparison.Ordinal));
    }
}
