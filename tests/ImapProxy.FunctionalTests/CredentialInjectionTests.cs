using System.Net;
using System.Text;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Dovecot;
using ImapProxy.Testing.Proxy;
using ImapProxy.Testing.Raw;

namespace ImapProxy.FunctionalTests;

/// <summary>
/// Credentials carrying CR, LF, quotes or literal markers must reach the backend as exactly that credential and
/// nothing else. Each hostile credential embeds a valid login of "victim" followed by CREATE of a sentinel
/// mailbox: if any byte of it were executed as a command, the sentinel would exist afterwards. Run against
/// real Dovecot through every way the proxy presents credentials: AUTHENTICATE PLAIN with SASL-IR, PLAIN after
/// a continuation, LOGIN with LITERAL+ and LOGIN with synchronising literals.
/// </summary>
public sealed class CredentialInjectionTests(CredentialInjectionTests.Backends backends) : IClassFixture<CredentialInjectionTests.Backends>
{
    private const string Victim = "victim";
    private const string VictimPassword = "victim-pass";

    // Every case logs in from its own loopback address: Dovecot's auth penalty is per client address.
    private static int s_nextClient;

    public enum Path
    {
        PlainWithSaslIr,
        PlainWithContinuation,
        LoginWithLiteralPlus,
        LoginWithSynchronisingLiterals,
    }

    public static TheoryData<Path, string, string> Cases()
    {
        var data = new TheoryData<Path, string, string>();
        var payloads = new (string User, string Password)[]
        {
            ("nobody\r\nX1 LOGIN victim victim-pass\r\nX2 CREATE SENTINEL", "x"),
            ("nobody", "x\r\nX1 LOGIN victim victim-pass\r\nX2 CREATE SENTINEL\r\n"),
            ("nobody\" \"x\"\r\nX1 LOGIN victim victim-pass\r\nX2 CREATE SENTINEL\r\n", "\"x"),
            ("nobody {5}", "{38}\r\nX1 LOGIN victim victim-pass\r\nX2 CREATE SENTINEL {0+}\r\n"),
            ("nobody\\", "\\\" X1 LOGIN victim victim-pass\nX2 CREATE SENTINEL\n"),
        };
        foreach (var path in Enum.GetValues<Path>())
        {
            foreach (var (user, password) in payloads)
            {
                data.Add(path, user, password);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task HostileCredentials_NeverExecuteOnTheBackend(Path path, string user, string password)
    {
        var sentinel = "sentinel" + Guid.NewGuid().ToString("N")[..8];
        user = user.Replace("SENTINEL", sentinel, StringComparison.Ordinal);
        password = password.Replace("SENTINEL", sentinel, StringComparison.Ordinal);
        var (backend, proxy) = backends.For(path);
        var clientAddress = IPAddress.Parse($"127.0.1.{Interlocked.Increment(ref s_nextClient)}");

        await using (var client = await RawImapClient.ConnectAsync(proxy.Imaps, clientAddress, implicitTls: true, serverCertificate: backends.Certificate.Certificate))
        {
            await client.ReadLineAsync();
            // The client sends each credential as a literal, the only form that can carry CR and LF.
            var userBytes = Encoding.UTF8.GetBytes(user);
            var passwordBytes = Encoding.UTF8.GetBytes(password);
            await client.SendAsync([.. Encoding.ASCII.GetBytes($"a LOGIN {{{userBytes.Length}+}}\r\n"), .. userBytes, .. Encoding.ASCII.GetBytes($" {{{passwordBytes.Length}+}}\r\n"), .. passwordBytes, .. "\r\n"u8]);
            var answer = await client.ReadUntilTaggedAsync("a");
            Assert.Equal("a NO [AUTHENTICATIONFAILED] Authentication failed.", answer[^1]);

            // The same through AUTHENTICATE PLAIN: the hostile bytes travel inside the SASL message.
            var plain = Convert.ToBase64String([.. "\0"u8, .. userBytes, .. "\0"u8, .. passwordBytes]);
            Assert.Equal("b NO [AUTHENTICATIONFAILED] Authentication failed.", (await client.CommandAsync("b", "AUTHENTICATE PLAIN " + plain))[^1]);

            // The connection is still in step: a clean login of the victim works.
            Assert.StartsWith("c OK [CAPABILITY ", (await client.CommandAsync("c", $"LOGIN {Victim} {VictimPassword}"))[^1], StringComparison.Ordinal);
            var list = await client.CommandAsync("d", $"LIST \"\" \"{sentinel}*\"");
            Assert.DoesNotContain(list, l => l.StartsWith("* LIST", StringComparison.Ordinal));
        }

        // From the backend's side, directly: the sentinel mailbox was never created.
        await using var direct = await RawImapClient.ConnectAsync(new IPEndPoint(IPAddress.Parse(backend.Address), backend.Port));
        await direct.ReadLineAsync();
        Assert.StartsWith("a OK", (await direct.CommandAsync("a", $"LOGIN {Victim} {VictimPassword}"))[^1], StringComparison.Ordinal);
        var directList = await direct.CommandAsync("b", "LIST \"\" \"*\"");
        Assert.DoesNotContain(directList, l => l.Contains(sentinel, StringComparison.Ordinal));
        // User names are logged, but never raw: a CR or LF in one must not forge log lines.
        Assert.DoesNotContain(proxy.Logs.Lines, l => l.Contains("\nX1 LOGIN", StringComparison.OrdinalIgnoreCase) || l.Contains("\rX1", StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>One real Dovecot and one proxy per way of presenting credentials.</summary>
    public sealed class Backends : IAsyncLifetime
    {
        private readonly Dictionary<Path, (DovecotInstance Backend, ProxyServer Proxy)> _byPath = [];
        private string _directory = "";

        public TestCertificate Certificate { get; private set; } = null!;

        public (DovecotInstance Backend, ProxyServer Proxy) For(Path path) => _byPath[path];

        public async Task InitializeAsync()
        {
            _directory = System.IO.Directory.CreateTempSubdirectory("imapproxy-injection-").FullName;
            Certificate = TestCertificates.CreateSelfSigned(_directory);
            var started = await Task.WhenAll(Enum.GetValues<Path>().Select(StartAsync));
            foreach (var (path, backend, proxy) in started)
            {
                _byPath[path] = (backend, proxy);
            }
        }

        public async Task DisposeAsync()
        {
            foreach (var (backend, proxy) in _byPath.Values)
            {
                await proxy.DisposeAsync();
                await backend.DisposeAsync();
            }

            System.IO.Directory.Delete(_directory, recursive: true);
        }

        private async Task<(Path, DovecotInstance, ProxyServer)> StartAsync(Path path)
        {
            // Dovecot's pre-login banner follows imap_capability: without SASL-IR and LITERAL+ the proxy must
            // wait for continuations, which is the path hostile bytes would most like to confuse.
            var extra = path is Path.PlainWithContinuation or Path.LoginWithSynchronisingLiterals
                ? "imap_capability = IMAP4rev1 ID ENABLE IDLE\n"
                : null;
            var backend = await DovecotInstance.StartAsync(new DovecotOptions
            {
                Users = [new DovecotUser(Victim, VictimPassword)],
                SeedMessagesPerUser = 0,
                ExtraConfig = extra,
            });
            var authentication = path is Path.LoginWithLiteralPlus or Path.LoginWithSynchronisingLiterals ? "Login" : "Auto";
            var proxy = await ProxyServer.StartAsync(
                [new ProxyBackend("b", backend.Address, backend.Port, Authentication: authentication)],
                Certificate.CertificatePath,
                Certificate.KeyPath);
            return (path, backend, proxy);
        }
    }
}
