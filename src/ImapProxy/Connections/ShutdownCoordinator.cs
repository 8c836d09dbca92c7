using ImapProxy.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace ImapProxy.Connections;

/// <summary>
/// Shutdown in three phases: the IMAP listeners stop accepting; <see cref="Stopping"/> fires at once, so sessions
/// still in the pre-auth dialogue say "* BYE" and close; spliced sessions get the configured grace, then
/// <see cref="SessionsEnding"/> fires and every session in the <see cref="SessionRegistry"/> is ended (sessions that
/// reach the splice later check <see cref="SessionsEnding"/> themselves). The host's shutdown timeout is set a
/// little above the grace; <see cref="ImapListeners"/> aborts whatever is left when it runs out.
/// </summary>
internal sealed class ShutdownCoordinator : IDisposable
{
    private readonly CancellationTokenSource _graceOver;
    private readonly CancellationTokenRegistration _registration;
    private readonly CancellationTokenRegistration _sweep;

    public ShutdownCoordinator(IHostApplicationLifetime lifetime, IOptions<ImapProxyOptions> options, TimeProvider timeProvider, SessionRegistry sessions)
    {
        _graceOver = new CancellationTokenSource(Timeout.InfiniteTimeSpan, timeProvider);
        Stopping = lifetime.ApplicationStopping;
        var grace = options.Value.Session.ShutdownGrace;
        _registration = Stopping.Register(() => _graceOver.CancelAfter(grace));
        _sweep = _graceOver.Token.Register(sessions.EndAll);
    }

    public CancellationToken Stopping { get; }

    public CancellationToken SessionsEnding => _graceOver.Token;

    public void Dispose()
    {
        _registration.Dispose();
        _sweep.Dispose();
        _graceOver.Dispose();
    }
}
