using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using ImapProxy.Configuration;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Sockets;
using ImapProxy.Tls;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Xunit;

namespace ImapProxy.Tests.Tls;

/// <summary>SSL_MODE_RELEASE_BUFFERS through the runtime's own OpenSSL handle, on real loopback TLS connections.</summary>
public sealed class OpenSslBuffersTests : IDisposable
{
    private const long ReleaseBuffers = 0x10;

    private readonly string _directory = System.IO.Directory.CreateTempSubdirectory("openssl-buffers-").FullName;

    public void Dispose() => System.IO.Directory.Delete(_directory, recursive: true);

    [Fact]
    public async Task TryRelease_SetsTheModeAndTheConnectionStillCarriesData()
    {
        Assert.True(OperatingSystem.IsLinux(), "the proxy's TLS memory figures are for Linux/OpenSSL");
        await using var pair = await TlsLoopbackPair.ConnectAsync(TestCertificates.CreateSelfSigned(_directory));

        var before = OpenSslBuffers.GetMode(pair.Server);
        Assert.NotNull(before);
        Assert.Equal(0, before.Value & ReleaseBuffers);

        Assert.True(OpenSslBuffers.TryRelease(pair.Server), OpenSslBuffers.UnavailableReason);
        Assert.True(OpenSslBuffers.TryRelease(pair.Client), OpenSslBuffers.UnavailableReason);
        Assert.Null(OpenSslBuffers.UnavailableReason);
        Assert.Equal(ReleaseBuffers, OpenSslBuffers.GetMode(pair.Server)!.Value & ReleaseBuffers);
        Assert.Equal(before.Value | ReleaseBuffers, OpenSslBuffers.GetMode(pair.Server));

        // Buffers are freed and allocated again around every record: full records, small ones, both ways.
        await AssertRoundTripAsync(pair, RandomNumberGenerator.GetBytes(300_000));
        await AssertRoundTripAsync(pair, "a1 NOOP\r\n"u8.ToArray());
        await AssertRoundTripAsync(pair, RandomNumberGenerator.GetBytes(70_001));
    }

    [Fact]
    public async Task Policy_AppliesTheOptionAndLeavesTheModeAloneWhenOff()
    {
        await using var on = await TlsLoopbackPair.ConnectAsync(TestCertificates.CreateSelfSigned(_directory));
        await using var off = await TlsLoopbackPair.ConnectAsync(TestCertificates.CreateSelfSigned(_directory));

        Policy(release: true).Apply(on.Server);
        Policy(release: false).Apply(off.Server);

        Assert.Equal(ReleaseBuffers, OpenSslBuffers.GetMode(on.Server)!.Value & ReleaseBuffers);
        Assert.Equal(0, OpenSslBuffers.GetMode(off.Server)!.Value & ReleaseBuffers);
        await AssertRoundTripAsync(on, RandomNumberGenerator.GetBytes(40_000));
    }

    [Fact]
    public void GetMode_IsNullOnAStreamThatNeverHandshook()
    {
        using var stream = new SslStream(new MemoryStream());
        Assert.Null(OpenSslBuffers.GetMode(stream));
        Assert.False(OpenSslBuffers.TryRelease(stream));
    }

    private static TlsBufferPolicy Policy(bool release)
    {
        var options = Options.Create(new ImapProxyOptions { Performance = new PerformanceOptions { ReleaseTlsBuffers = release, TrimNativeMemory = false } });
        return new(options, new AllocatorTrim(options, TimeProvider.System, NullLogger<AllocatorTrim>.Instance), NullLogger<TlsBufferPolicy>.Instance);
    }

    /// <summary>Both directions of <paramref name="pair"/> carry <paramref name="data"/> intact.</summary>
    private static async Task AssertRoundTripAsync(TlsLoopbackPair pair, byte[] data)
    {
        await Transfer(pair.Client, pair.Server, data);
        await Transfer(pair.Server, pair.Client, data);
    }

    private static async Task Transfer(SslStream from, SslStream to, byte[] data)
    {
        var received = new byte[data.Length];
        var read = to.ReadExactlyAsync(received).AsTask();
        await from.WriteAsync(data);
        await from.FlushAsync();
        await read;
        Assert.Equal(data, received);
    }
}
