using System.Collections.Concurrent;
using System.Net;
using ImapProxy.Configuration;
using Microsoft.Extensions.Options;

namespace ImapProxy.Connections;

/// <summary>
/// The delay before a failed-authentication answer, growing with repeated failures of one (client address,
/// user) pair: base, 2×base, 4×base ... up to the maximum. Entries expire after the window; the table is bounded
/// (when full, the oldest half is dropped) so a password-spraying client cannot grow it without limit.
/// </summary>
internal sealed class AuthFailureThrottle
{
    private const int MaxEntries = 100_000;

    private readonly ConcurrentDictionary<(IPAddress, string), Entry> _failures = new();
    private readonly PreAuthOptions _options;
    private readonly TimeProvider _timeProvider;

    public AuthFailureThrottle(IOptions<ImapProxyOptions> options, TimeProvider timeProvider)
    {
        _options = options.Value.PreAuth;
        _timeProvider = timeProvider;
    }

    /// <summary>Records a failure and returns how long to wait before answering it.</summary>
    public TimeSpan RecordFailure(IPAddress client, string user)
    {
        var now = _timeProvider.GetUtcNow();
        if (_failures.Count >= MaxEntries)
        {
            Prune(now);
        }

        var entry = _failures.AddOrUpdate(
            (client, user),
            _ => new Entry(1, now),
            (_, previous) => now - previous.LastFailure > _options.AuthFailureWindow ? new Entry(1, now) : new Entry(previous.Count + 1, now));

        var factor = Math.Pow(2, Math.Min(entry.Count - 1, 16));
        var delay = TimeSpan.FromTicks((long)Math.Min(_options.AuthFailureDelay.Ticks * factor, _options.AuthFailureMaxDelay.Ticks));
        return delay;
    }

    /// <summary>A success clears the pair's history.</summary>
    public void RecordSuccess(IPAddress client, string user) => _failures.TryRemove((client, user), out _);

    private void Prune(DateTimeOffset now)
    {
        foreach (var (key, entry) in _failures)
        {
            if (now - entry.LastFailure > _options.AuthFailureWindow)
            {
                _failures.TryRemove(key, out _);
            }
        }

        if (_failures.Count >= MaxEntries)
        {
            var cutoff = _failures.Values.Select(e => e.LastFailure).Order().ElementAt(_failures.Count / 2);
            foreach (var (key, entry) in _failures)
            {
                if (entry.LastFailure <= cutoff)
                {
                    _failures.TryRemove(key, out _);
                }
            }
        }
    }

    private readonly record struct Entry(int Count, DateTimeOffset LastFailure);
}
