using System.Net;
using System.Security.Cryptography.X509Certificates;
using ImapProxy.Backends;
using ImapProxy.Directory;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Dovecot;
using ImapProxy.Testing.Proxy;

namespace ImapProxy.FunctionalTests;

/// <summary>
/// Two real Dovecot backends and the proxy in front of them, shared by the tests of the "Cluster" collection.
/// Tests that change a backend's state start their own instances instead.
/// </summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    /// <summary>A password with spaces, quotes, a backslash and non-ASCII bytes.</summary>
    public const string TrickyPassword = "p a\"s\\s w\u00f6rd \u20ac";

    public static readonly DovecotUser[] Users =
    [
        new("alice", "alice-pass"),
        new("bob", "bob-pass"),
        new("carol", "carol-pass"),
        new("dave", "dave-pass"),
        new("erin", "erin-pass"),
        new("frank", "frank-pass"),
        new("tricky", TrickyPassword),
    ];

    /// <summary>Addresses 127.0.0.9 is trusted for plaintext logins; everyone else is not.</summary>
    public static readonly IPAddress TrustedClient = IPAddress.Parse("127.0.0.9");

    private string _directory = "";

    public DovecotInstance Backend1 { get; private set; } = null!;

    public DovecotInstance Backend2 { get; private set; } = null!;

    public TestCertificate Certificate { get; private set; } = null!;

    public X509Certificate2 ServerCertificate => Certificate.Certificate;

    public ProxyServer Proxy { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        _directory = System.IO.Directory.CreateTempSubdirectory("imapproxy-cluster-").FullName;
        Certificate = TestCertificates.CreateSelfSigned(_directory);
        var backends = await Task.WhenAll(
            DovecotInstance.StartAsync(new DovecotOptions { Users = Users }),
            DovecotInstance.StartAsync(new DovecotOptions { Users = Users }));
        Backend1 = backends[0];
        Backend2 = backends[1];
        Proxy = await ProxyServer.StartAsync(
            [new ProxyBackend("dovecot-1", Backend1.Address, Backend1.Port), new ProxyBackend("dovecot-2", Backend2.Address, Backend2.Port)],
            Certificate.CertificatePath,
            Certificate.KeyPath,
            new Dictionary<string, string?> { ["ImapProxy:PreAuth:TrustedNetworks:0"] = TrustedClient + "/32" });
    }

    public async Task DisposeAsync()
    {
        if (Proxy is not null)
        {
            await Proxy.DisposeAsync();
        }

        if (Backend1 is not null)
        {
            await Backend1.DisposeAsync();
        }

        if (Backend2 is not null)
        {
            await Backend2.DisposeAsync();
        }

        System.IO.Directory.Delete(_directory, recursive: true);
    }

    /// <summary>The backend rendezvous hashing picks for a user, computed the way the proxy does.</summary>
    public DovecotInstance BackendFor(string user)
    {
        var endpoints = new[]
        {
            new BackendEndpoint("dovecot-1", Backend1.Address, Backend1.Port, 100),
            new BackendEndpoint("dovecot-2", Backend2.Address, Backend2.Port, 100),
        };
        return RendezvousHash.Pick(user, endpoints)!.Id == "dovecot-1" ? Backend1 : Backend2;
    }
}

[CollectionDefinition(Name)]
public sealed class ClusterDefinition : ICollectionFixture<ClusterFixture>
{
    public const string Name = "Cluster";
}
