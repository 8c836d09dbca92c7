using System.Collections.Concurrent;
using ImapProxy.Backends;
using ImapProxy.Configuration;
using ImapProxy.Telemetry;
using Microsoft.Extensions.Options;

namespace ImapProxy.Directory;

/// <summary>Backends from configuration only (deployments without Consul): rendezvous hashing over all of them.</summary>
internal sealed class StaticDirectory : IBackendDirectory
{
    private readonly DirectoryView _view;
    private readonly SuspectList _suspects;

    private readonly ImapProxyMetrics _metrics;

    public StaticDirectory(IOptions<ImapProxyOptions> options, TimeProvider timeProvider, ImapProxyMetrics metrics)
    {
        var backends = options.Value.Backends.Static.Select(BackendEndpoint.FromOptions);
        _view = new DirectoryView(backends.Select(b => new BackendStatus(b, Healthy: true, BackendState.Active)), timeProvider.GetUtcNow());
        _suspects = new SuspectList(options.Value.Directory.SuspectDuration, timeProvider);
        _metrics = metrics;
        BackendGauges.Register(metrics, () => _view, _suspects);
    }

    public bool HasView => _view.Candidates.Count > 0;

    public string? Degraded => null;

    public ValueTask<DirectoryResult> FindBackendAsync(string user, CancellationToken cancellationToken)
    {
        var backend = _view.Hash(user, _suspects.IsSuspect);
        _metrics.DirectoryLookup("static");
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

/// <summary>Per-backend gauges observed from the current view (a bounded set: one series per backend).</summary>
internal static class BackendGauges
{
    public static void Register(ImapProxyMetrics metrics, Func<DirectoryView> view, SuspectList suspects)
    {
        metrics.Meter.CreateObservableGauge(
            "imapproxy.backend.healthy",
            () => view().ById.Values.Select(b => new System.Diagnostics.Metrics.Measurement<int>(
                b.Healthy && !suspects.IsSuspect(b.Endpoint.Id) ? 1 : 0,
                new KeyValuePair<string, object?>(ImapProxyMetrics.BackendTag, b.Endpoint.Id),
                new KeyValuePair<string, object?>("imapproxy.backend.state", b.State.ToString().ToLowerInvariant()))),
            "{backend}",
            "1 when the backend is healthy (Consul passing, not locally suspected), else 0; labelled with its state.");
        metrics.Meter.CreateObservableGauge(
            "imapproxy.backend.weight",
            () => view().ById.Values.Select(b => new System.Diagnostics.Metrics.Measurement<double>(
                b.Endpoint.Weight,
                new KeyValuePair<string, object?>(ImapProxyMetrics.BackendTag, b.Endpoint.Id))),
            "{weight}",
            "The backend's weight in rendezvous hashing.");
    }
}
