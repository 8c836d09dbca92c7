using System.Collections.Concurrent;
using ImapProxy.Backends;
using ImapProxy.Configuration;
using Microsoft.Extensions.Options;

namespace ImapProxy.Directory;

/// <summary>Backends from configuration only (deployments without Consul): rendezvous hashing over all of them.</summary>
internal sealed class StaticDirectory : IBackendDirectory
{
    private readonly DirectoryView _view;
    private readonly SuspectList _suspects;

    public StaticDirectory(IOptions<ImapProxyOptions> options, TimeProvider timeProvider)
    {
        var backends = options.Value.Backends.Static.Select(BackendEndpoint.FromOptions);
        _view = new DirectoryView(backends.Select(b => new BackendStatus(b, Healthy: true, BackendState.Active)), timeProvider.GetUtcNow());
        _suspects = new SuspectList(options.Value.Directory.SuspectDuration, timeProvider);
    }

    public bool HasView => _view.Candidates.Count > 0;

    public string? Degraded => null;

    public ValueTask<DirectoryResult> FindBackendAsync(string user, CancellationToken cancellationToken)
    {
        var backend = _view.Hash(user, _suspects.IsSuspect);
        return ValueTask.FromResult(new DirectoryResult(backend, DirectorySource.Hash, backend is null ? "no backend available" : null));
    }

    public void MarkSuspect(string backendId) => _suspects.Mark(backendId);
}

/// <summary>Backends that refused connections recently, each until its suspicion expires.</summary>
internal sealed class SuspectList(TimeSpan duration, TimeProvider timeProvider)
{
    private readonly ConcurrentDictionary<string, DateTimeOffset> _until = new(StringComparer.Ordinal);

    public void Mark(string backendId) => _until[backendId] = timeProvider.GetUtcNow() + duration;

    public void Clear(string backendId) => _until.TryRemove(backendId, out _);

    public bool IsSuspect(string backendId)
    {
        if (!_until.TryGetValue(backendId, out var until))
        {
            return false;
        }

        if (timeProvider.GetUtcNow() < until)
        {
            return true;
        }

        _until.TryRemove(new KeyValuePair<string, DateTimeOffset>(backendId, until));
        return false;
    }
}
