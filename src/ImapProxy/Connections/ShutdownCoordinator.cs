using ImapProxy.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace ImapProxy.Connections;

/// <summary>
/// Shutdown in three phases: Kestrel stops accepting; <see cref="Stopping"/> fires at once, so sessions still
/// in the pre-auth dialogue say "* BYE" and close; spliced sessions get the configured grace, then
/// <see cref="SessionsEnding"/> ends them. The host's shutdown timeout is set a little above the grace.
/// </summary>
internal sealed class ShutdownCoordinator : IDisposable
{
    private readonly CancellationTokenSource _graceOver;
    private readonly CancellationTokenRegistration _registration;

    public ShutdownCoordinator(IHostApplicationLifetime lifetime, IOptions<ImapProxyOptions> options, TimeProvider timeProvider)
    {
        _graceOver = new CancellationTokenSource(Timeout.InfiniteTimeSpan, timeProvider);
        Stopping = lifetime.ApplicationStopping;
        var grace = options.Value.Session.ShutdownGrace;
        _registration = Stopping.Register(() => _graceOver.CancelAfter(grace));
    }

    public CancellationToken Stopping { get; }

    public CancellationToken SessionsEnding => _graceOver.Token;

    public void Dispose()
    {
        _registration.Dispose();
        _graceOver.Dispose();
    }
}
