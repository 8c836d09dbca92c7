using ImapProxy.Configuration;
using ImapProxy.Tls;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace ImapProxy.Tests.Tls;

/// <summary>The allocator trim after bursts of handshakes: when it runs, and when it does not.</summary>
public sealed class AllocatorTrimTests
{
    private readonly FakeTimeProvider _time = new();

    [Fact]
    public void ABurstOfHandshakes_IsFollowedByOneTrimOnceItPauses()
    {
        using var trim = Create(enabled: true);
        Handshakes(trim, AllocatorTrim.HandshakesPerTrim);
        _time.Advance(AllocatorTrim.Interval);
        Assert.Equal(0, trim.Trims); // still coming in at the first look

        _time.Advance(AllocatorTrim.Interval); // a second without one: the burst is over
        Assert.Equal(1, trim.Trims);

        _time.Advance(10 * AllocatorTrim.Interval);
        Assert.Equal(1, trim.Trims); // nothing happened since
    }

    [Fact]
    public void HandshakesThatGoOn_AreTrimmedAfterEveryFewSeconds()
    {
        using var trim = Create(enabled: true);
        for (var tick = 1; tick <= 2 * AllocatorTrim.TicksPerTrimWhileBusy; tick++)
        {
            Handshakes(trim, AllocatorTrim.HandshakesPerTrim);
            _time.Advance(AllocatorTrim.Interval);
            Assert.Equal(tick / AllocatorTrim.TicksPerTrimWhileBusy, trim.Trims);
        }
    }

    [Fact]
    public void AFewHandshakes_AreCountedTowardsTheNextTrim()
    {
        using var trim = Create(enabled: true);
        Handshakes(trim, AllocatorTrim.HandshakesPerTrim - 1);
        _time.Advance(3 * AllocatorTrim.Interval);
        Assert.Equal(0, trim.Trims);

        Handshakes(trim, 1);
        _time.Advance(2 * AllocatorTrim.Interval);
        Assert.Equal(1, trim.Trims);
    }

    [Fact]
    public void Disabled_NeverTrims()
    {
        using var trim = Create(enabled: false);
        Handshakes(trim, 2 * AllocatorTrim.HandshakesPerTrim);

        _time.Advance(10 * AllocatorTrim.Interval);
        Assert.Equal(0, trim.Trims);
    }

    private static void Handshakes(AllocatorTrim trim, int count)
    {
        for (var i = 0; i < count; i++)
        {
            trim.OnHandshake();
        }
    }

    private AllocatorTrim Create(bool enabled) => new(
        Options.Create(new ImapProxyOptions { Performance = new PerformanceOptions { TrimNativeMemory = enabled } }),
        _time,
        NullLogger<AllocatorTrim>.Instance);
}
