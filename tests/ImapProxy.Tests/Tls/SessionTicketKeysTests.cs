using System.Net.Security;
using System.Security.Authentication;
using ImapProxy.Testing.Certificates;
using ImapProxy.Tls;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace ImapProxy.Tests.Tls;

/// <summary>
/// The keys that seal session tickets (<see cref="SessionTicketKeys"/>): read from a file, rotated by the process, and
/// used by real OpenSSL contexts (<see cref="TlsServerContext"/>) against the runtime's SslStream as the client, which
/// offers the ticket it kept for the target host to whichever server it connects to next.
/// </summary>
public sealed class SessionTicketKeysTests : IDisposable
{
    private static readonly TimeSpan s_rotation = TimeSpan.FromHours(1);

    private readonly string _directory = System.IO.Directory.CreateTempSubdirectory("session-ticket-keys-").FullName;
    private readonly TestCertificate _certificate;
    private readonly List<TlsServerContext> _contexts = [];

    public SessionTicketKeysTests()
    {
        _certificate = TestCertificates.CreateSelfSigned(_directory);
    }

    public void Dispose()
    {
        foreach (var context in _contexts)
        {
            context.Dispose();
        }

        System.IO.Directory.Delete(_directory, recursive: true);
    }

    [Fact]
    public void AKeyFile_HasOneKeyPerLine_TheFirstSeals_EveryKeyOpens()
    {
        var (first, second) = (NewKey(), NewKey());
        var keys = SessionTicketKeys.FromFile(KeyFile("# the sealing key first", "", Convert.ToBase64String(first), "  " + Convert.ToBase64String(second) + "  "));

        Assert.Equal(first[..16], keys.ForSealing().Name);
        Assert.Equal(first[16..48], keys.ForSealing().HmacKey);
        Assert.Equal(first[48..], keys.ForSealing().AesKey);

        Assert.Same(keys.ForSealing(), keys.ForOpening(first.AsSpan(0, 16), out var renewFirst));
        Assert.False(renewFirst);
        Assert.Equal(second[..16], keys.ForOpening(second.AsSpan(0, 16), out var renewSecond)!.Name);
        Assert.True(renewSecond); // opened by an older key: the client gets a ticket of the sealing one
        Assert.Null(keys.ForOpening(NewKey().AsSpan(0, 16), out _));
    }

    [Theory]
    [InlineData("not base64 at all!", "line 2: not a session ticket key")]
    [InlineData("short", "line 2: not a session ticket key")]
    [InlineData("duplicate", "line 2: a second key with the name of an earlier one")]
    [InlineData("", "no session ticket key")]
    public void AKeyFileThatIsNotOne_IsRefused_NamingTheLine_NeverItsContent(string second, string expected)
    {
        var first = NewKey();
        var secondLine = second switch
        {
            "short" => Convert.ToBase64String(NewKey()[..48]),
            "duplicate" => Convert.ToBase64String([.. first[..16], .. NewKey()[16..]]),
            _ => second,
        };
        string[] lines = second.Length == 0 ? ["# nothing else"] : [Convert.ToBase64String(first), secondLine];

        var error = Assert.Throws<FormatException>(() => SessionTicketKeys.FromFile(KeyFile(lines)));

        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(Convert.ToBase64String(first), error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(secondLine.Length > 0 ? secondLine : "\u0001", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RotatingKeys_SealWithANewKeyEachRotation_AndOpenTheLastOneUntilTwoRotations()
    {
        var time = new FakeTimeProvider();
        var keys = SessionTicketKeys.Rotating(s_rotation, time);
        var first = keys.ForSealing();

        time.Advance(s_rotation - TimeSpan.FromSeconds(1));
        Assert.Same(first, keys.ForSealing());
        Assert.Same(first, keys.ForOpening(first.Name, out var renew));
        Assert.False(renew);

        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Same(first, keys.ForOpening(first.Name, out renew));
        Assert.True(renew); // due for rotation: its tickets are replaced
        var second = keys.ForSealing();
        Assert.NotSame(first, second);
        Assert.NotEqual(first.Name, second.Name);
        Assert.Same(first, keys.ForOpening(first.Name, out renew));
        Assert.True(renew);

        time.Advance(s_rotation);
        Assert.Null(keys.ForOpening(first.Name, out _)); // two rotations old, though no new key was made yet
        Assert.Same(second, keys.ForOpening(second.Name, out _));
    }

    [Theory]
    [InlineData(SslProtocols.Tls13)]
    [InlineData(SslProtocols.Tls12)]
    public async Task ContextsReadingOneKeyFile_ResumeEachOthersSessions(SslProtocols protocol)
    {
        // Two replicas: each its own context, one Secret.
        var file = KeyFile(Convert.ToBase64String(NewKey()));
        var options = ClientOptions(protocol);

        var secondKeys = SessionTicketKeys.FromFile(file);
        var (first, second) = (Context(SessionTicketKeys.FromFile(file)), Context(secondKeys));

        Assert.False(await ConnectAndTakeTicketsAsync(first, options));
        Assert.True(await ConnectAndTakeTicketsAsync(second, options));

        // A TLS 1.3 resumption gets a new ticket; a TLS 1.2 client keeps its ticket while its key seals.
        Assert.Equal(protocol == SslProtocols.Tls13, secondKeys.TicketsSealed > 0);

        // And back, again and again: a TLS 1.3 client uses each ticket once, so every resumption must hand it a new one.
        for (var i = 0; i < 3; i++)
        {
            Assert.True(await ConnectAndTakeTicketsAsync(first, options));
            Assert.True(await ConnectAndTakeTicketsAsync(second, options));
        }
    }

    [Fact]
    public async Task ContextsWithKeysOfTheirOwn_DoNotResumeEachOthersSessions()
    {
        var time = new FakeTimeProvider();
        var options = ClientOptions(SslProtocols.Tls13);
        var mine = Context(SessionTicketKeys.Rotating(s_rotation, time));

        Assert.False(await ConnectAndTakeTicketsAsync(mine, options));
        Assert.True(await ConnectAndTakeTicketsAsync(mine, options)); // the client does hold a ticket
        Assert.False(await ConnectAndTakeTicketsAsync(Context(SessionTicketKeys.Rotating(s_rotation, time)), options));
    }

    [Theory]
    [InlineData(SslProtocols.Tls13)]
    [InlineData(SslProtocols.Tls12)]
    public async Task ATicketOfAnOlderKey_StillResumes_AndIsReplacedByOneOfTheSealingKey(SslProtocols protocol)
    {
        var (old, current) = (Convert.ToBase64String(NewKey()), Convert.ToBase64String(NewKey()));
        var options = ClientOptions(protocol);
        Assert.False(await ConnectAndTakeTicketsAsync(Context(SessionTicketKeys.FromFile(KeyFile(old))), options));

        // The Secret rotated: a new sealing key first, the old one kept after it. The resumption hands the client a
        // ticket of the new key.
        var rotated = SessionTicketKeys.FromFile(KeyFile(current, old));
        Assert.True(await ConnectAndTakeTicketsAsync(Context(rotated), options));
        Assert.True(rotated.TicketsSealed > 0);

        // The runtime's TLS 1.3 client takes it. Its TLS 1.2 client goes on offering the ticket it resumed with
        // (OpenSSL tells it of new TLS 1.2 sessions after full handshakes only), which the counter above stands for.
        if (protocol == SslProtocols.Tls13)
        {
            Assert.True(await ConnectAndTakeTicketsAsync(Context(SessionTicketKeys.FromFile(KeyFile(current))), options));
        }

        // Once the old key is dropped from the file, its tickets no longer open: another client, with a ticket of it.
        var stale = ClientOptions(protocol);
        var oldOnly = Context(SessionTicketKeys.FromFile(KeyFile(old)));
        Assert.False(await ConnectAndTakeTicketsAsync(oldOnly, stale));
        Assert.True(await ConnectAndTakeTicketsAsync(oldOnly, stale));
        Assert.False(await ConnectAndTakeTicketsAsync(Context(SessionTicketKeys.FromFile(KeyFile(current))), stale));
    }

    [Fact]
    public async Task TheKeys_LiveAsLongAsTheLastConnectionOfTheirContext_ThenAreLetGo()
    {
        var (keys, context) = ContextHoldingTheOnlyReferenceToItsKeys();
        await using (var pair = await TlsTestPair.ConnectAsync(context, ClientOptions(SslProtocols.Tls13)))
        {
            // The proxy lets go of a context at a certificate reload while its connections go on.
            context.Dispose();
            CollectGarbage();
            Assert.True(IsAlive(keys));

            // They still seal the connection's tickets.
            await pair.Server.WriteAsync("* OK\r\n"u8.ToArray());
            await pair.Client.ReadExactlyAsync(new byte[6]).AsTask().WaitAsync(TlsTestPair.Limit);
        }

        CollectGarbage();
        Assert.False(IsAlive(keys));
    }

    [Theory]
    [InlineData(SslProtocols.Tls13)]
    [InlineData(SslProtocols.Tls12)]
    public async Task RotatingKeys_OutliveAContext_AndATicketTwoRotationsOldDoesNotResume(SslProtocols protocol)
    {
        var time = new FakeTimeProvider();
        var keys = SessionTicketKeys.Rotating(s_rotation, time);
        var options = ClientOptions(protocol);
        Assert.False(await ConnectAndTakeTicketsAsync(Context(keys), options));

        // A certificate reload makes a new context with the same keys: the client resumes.
        time.Advance(s_rotation / 2);
        Assert.True(await ConnectAndTakeTicketsAsync(Context(keys), options));

        // Its newest ticket is from the key of the start; two rotations later that key opens nothing.
        time.Advance(2 * s_rotation);
        Assert.False(await ConnectAndTakeTicketsAsync(Context(keys), options));
    }

    [Fact]
    public async Task TheProvider_ReloadsAChangedKeyFile_AndKeepsTheLastGoodKeysWhenItBreaks()
    {
        var (old, current) = (Convert.ToBase64String(NewKey()), Convert.ToBase64String(NewKey()));
        var file = KeyFile(old);
        var time = new FakeTimeProvider();
        var options = new ImapProxy.Configuration.ImapProxyOptions();
        options.Tls.CertificateFile = _certificate.CertificatePath;
        options.Tls.KeyFile = _certificate.KeyPath;
        options.Tls.SessionTicketKeyFile = file;
        using var provider = new ServerCertificateProvider(
            Microsoft.Extensions.Options.Options.Create(options), Microsoft.Extensions.Logging.Abstractions.NullLogger<ServerCertificateProvider>.Instance, time);
        var client = ClientOptions(SslProtocols.Tls13);
        var first = provider.GetServer().Context!;
        Assert.False(await ConnectAndTakeTicketsAsync(first, client));

        // The Secret gains a new sealing key: a new context, which still opens the client's ticket.
        File.WriteAllLines(file, [current, old]);
        time.Advance(options.Tls.ReloadCheckInterval);
        var second = provider.GetServer().Context!;
        Assert.NotSame(first, second);
        Assert.True(await ConnectAndTakeTicketsAsync(second, client));

        // A broken file keeps the last good keys in service.
        File.WriteAllText(file, "not a key\n");
        time.Advance(options.Tls.ReloadCheckInterval);
        Assert.Same(second, provider.GetServer().Context);
    }

    /// <summary>
    /// A handshake with <paramref name="context"/>, then one answer read by the client (TLS 1.3 tickets come with
    /// the server's first write); whether the server resumed a session.
    /// </summary>
    private static async Task<bool> ConnectAndTakeTicketsAsync(TlsServerContext context, SslClientAuthenticationOptions options)
    {
        await using var pair = await TlsTestPair.ConnectAsync(context, options);
        await pair.Server.WriteAsync("* OK\r\n"u8.ToArray());
        var greeting = new byte[6];
        await pair.Client.ReadExactlyAsync(greeting).AsTask().WaitAsync(TlsTestPair.Limit);
        return pair.Server.IsResumed;
    }

    /// <summary>Apart, so that no hidden local of the test's own frame keeps the target alive.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static bool IsAlive<T>(WeakReference<T> reference)
        where T : class => reference.TryGetTarget(out _);

    private static void CollectGarbage()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }

    private static byte[] NewKey() => System.Security.Cryptography.RandomNumberGenerator.GetBytes(SessionTicketKey.EncodedLength);

    private TlsServerContext Context(SessionTicketKeys keys)
    {
        var context = TlsServerContext.Create(_certificate.CertificatePath, _certificate.KeyPath, releaseBuffers: true, keys);
        _contexts.Add(context);
        return context;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private (WeakReference<SessionTicketKeys> Keys, TlsServerContext Context) ContextHoldingTheOnlyReferenceToItsKeys()
    {
        var keys = SessionTicketKeys.Rotating(s_rotation, TimeProvider.System);
        return (new(keys), TlsServerContext.Create(_certificate.CertificatePath, _certificate.KeyPath, releaseBuffers: true, keys));
    }

    private string KeyFile(params string[] lines)
    {
        var path = Path.Combine(_directory, $"ticket-keys-{Guid.NewGuid():N}");
        File.WriteAllLines(path, lines);
        return path;
    }

    /// <summary>
    /// A client of its own: the runtime keeps its clients' sessions per target host (and protocols), so each gets a
    /// name no other test uses (the certificate is checked by the callback, not by name).
    /// </summary>
    private SslClientAuthenticationOptions ClientOptions(SslProtocols protocol) => new()
    {
        TargetHost = $"client-{Guid.NewGuid():N}.test",
        EnabledSslProtocols = protocol,
        RemoteCertificateValidationCallback = (_, certificate, _, _) => certificate?.GetRawCertData().AsSpan().SequenceEqual(_certificate.Certificate.RawData) == true,
    };
}
