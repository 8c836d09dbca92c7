using System.Net;
using ImapProxy.Configuration;
using ImapProxy.Connections;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace ImapProxy.Tests.Connections;

public class AuthFailureThrottleTests
{
    private static readonly IPAddress s_client = IPAddress.Parse("192.0.2.10");
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));

    private AuthFailureThrottle Create() => new(Options.Create(new ImapProxyOptions
    {
        PreAuth = new PreAuthOptions
        {
            AuthFailureDelay = TimeSpan.FromSeconds(1),
            AuthFailureMaxDelay = TimeSpan.FromSeconds(5),
            AuthFailureWindow = TimeSpan.FromMinutes(15),
        },
    }), _time);

    [Fact]
    public void RecordFailure_DoublesUpToTheMaximum()
    {
        var throttle = Create();
        var delays = Enumerable.Range(0, 5).Select(_ => throttle.RecordFailure(s_client, "alice").TotalSeconds).ToArray();
        Assert.Equal([1, 2, 4, 5, 5], delays);
    }

    [Fact]
    public void RecordFailure_IsPerClientAndUser()
    {
        var throttle = Create();
        throttle.RecordFailure(s_client, "alice");
        throttle.RecordFailure(s_client, "alice");
        Assert.Equal(TimeSpan.FromSeconds(1), throttle.RecordFailure(s_client, "bob"));
        Assert.Equal(TimeSpan.FromSeconds(1), throttle.RecordFailure(IPAddress.Parse("192.0.2.11"), "alice"));
    }

    [Fact]
    public void RecordFailure_ForgetsAfterTheWindow()
    {
        var throttle = Create();
        throttle.RecordFailure(s_client, "alice");
        throttle.RecordFailure(s_client, "alice");
        _time.Advance(TimeSpan.FromMinutes(16));
        Assert.Equal(TimeSpan.FromSeconds(1), throttle.RecordFailure(s_client, "alice"));
    }

    [Fact]
    public void RecordSuccess_ClearsTheHistory()
    {
        var throttle = Create();
        throttle.RecordFailure(s_client, "alice");
        throttle.RecordFailure(s_client, "alice");
        throttle.RecordSuccess(s_client, "alice");
        Assert.Equal(TimeSpan.FromSeconds(1), throttle.RecordFailure(s_client, "alice"));
    }
}
