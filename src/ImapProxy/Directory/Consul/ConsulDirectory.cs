using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using ImapProxy.Backends;
using ImapProxy.Configuration;
using ImapProxy.Connections;
using ImapProxy.Telemetry;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace ImapProxy.Directory.Consul;

/// <summary>
/// The directory fed by Consul (DESIGN §4). Three blocking-query watches keep an immutable view: the health of
/// the backend service's instances, the backend states and weights (KV &lt;prefix&gt;/backends/), and the small
/// set of overrides (KV &lt;prefix&gt;/overrides/). Per-user placements (KV &lt;prefix&gt;/users/, possibly millions) are
/// read per login through a cache, never listed. When the view or a live user's placement changes, the
/// sessions that now belong elsewhere are kicked, spread over a short window. While Consul is unreachable the
/// last view keeps serving and no live session is dropped because of it.
/// </summary>
internal sealed class ConsulDirectory : BackgroundService, IBackendDirectory
{
    /// <summary>Successive queries of one watch are at least this far apart, whatever Consul answers.</summary>
    private static readonly TimeSpan s_minQueryInterval = TimeSpan.FromMilliseconds(100);

    private readonly ConsulClient _client;
    private readonly ConsulOptions _consul;
    private readonly DirectoryOptions _options;
    private readonly SessionRegistry _sessions;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger<ConsulDirectory> _logger;
    private readonly PlacementCache _placements;
    private readonly SuspectList _suspects;
    private readonly Lock _viewLock = new();
    private readonly ImapProxyMetrics _metrics;
    private readonly Channel<List<(LiveSession Session, string Reason)>> _kicks =
        Channel.CreateUnbounded<List<(LiveSession Session, string Reason)>>(new UnboundedChannelOptions { SingleReader = true });

    private volatile DirectoryView _view = DirectoryView.Empty;
    private volatile Dictionary<string, string> _overrides = new Dictionary<string, string>(StringComparer.Ordinal);
    private List<ConsulServiceEntry>? _instances;
    private Dictionary<string, (BackendState State, double? Weight)> _states = new(StringComparer.Ordinal);
    private readonly WatchState _health = new("health");
    private readonly WatchState _backendStates = new("backend states");
    private readonly WatchState _overridesWatch = new("overrides");

    public ConsulDirectory(
        ConsulClient client,
        IOptions<ImapProxyOptions> options,
        SessionRegistry sessions,
        TimeProvider timeProvider,
        ImapProxyMetrics metrics,
        ILogger<ConsulDirectory> logger)
    {
        _metrics = metrics;
        _client = client;
        _consul = options.Value.Consul;
        _options = options.Value.Directory;
        _sessions = sessions;
        _timeProvider = timeProvider;
        _logger = logger;
        _placements = new PlacementCache(_options.PlacementCacheTtl, _options.NegativeCacheTtl, _options.PlacementCacheSize, timeProvider);
        _suspects = new SuspectList(_options.SuspectDuration, timeProvider);
        BackendGauges.Register(metrics, () => _view, _suspects);
        metrics.Meter.CreateObservableGauge("imapproxy.consul.up", () => FailingWatch() is null && HasView ? 1 : 0, "{bool}", "1 while every Consul watch succeeds, 0 while one fails (the last view keeps serving).");
        metrics.Meter.CreateObservableGauge("imapproxy.consul.view.age", () => double.IsInfinity(ViewAgeSeconds) ? -1 : ViewAgeSeconds, "s", "Seconds since the Consul watch that succeeded least recently last did (-1 until each has once).");
        metrics.Meter.CreateObservableGauge("imapproxy.directory.placements.cached", () => _placements.Count, "{placement}", "Placements held in the cache.");
    }

    public bool HasView => _instances is not null;

    public DirectoryView View => _view;

    /// <summary>
    /// The view's age: seconds since the watch that succeeded least recently last did (infinite until each has once).
    /// A healthy blocking query returns at least every <see cref="ConsulOptions.WaitTime"/>.
    /// </summary>
    public double ViewAgeSeconds => Math.Max(_health.AgeSeconds(_timeProvider), Math.Max(_backendStates.AgeSeconds(_timeProvider), _overridesWatch.AgeSeconds(_timeProvider)));

    public string? Degraded
    {
        get
        {
            if (FailingWatch() is { } watch)
            {
                return $"Consul unreachable ({watch.Name} watch: {watch.Failing}); serving the last view, {ViewAgeSeconds:F0}s old";
            }

            return ViewAgeSeconds > _consul.StaleAfter.TotalSeconds ? $"Consul view is {ViewAgeSeconds:F0}s old" : null;
        }
    }

    /// <summary>The first watch that is failing now, or null.</summary>
    private WatchState? FailingWatch() =>
        _health.Failing is not null ? _health : _backendStates.Failing is not null ? _backendStates : _overridesWatch.Failing is not null ? _overridesWatch : null;

    public void MarkSuspect(string backendId) => _suspects.Mark(backendId);

    public async ValueTask<DirectoryResult> FindBackendAsync(string user, CancellationToken cancellationToken)
    {
        var view = _view;
        if (_overrides.TryGetValue(user, out var overridden))
        {
            _metrics.DirectoryLookup("override");
            return Resolve(view, overridden);
        }

        string? placed;
        string source;
        if (_placements.TryGet(user, out var cached, out var fresh) && fresh)
        {
            placed = cached.BackendId;
            source = "cache";
        }
        else
        {
            try
            {
                placed = await ReadPlacementAsync(user, cancellationToken);
                _placements.Set(user, placed);
                source = "consul";
            }
            catch (ConsulException ex)
            {
                Log.PlacementLookupFailed(_logger, UserNames.ForLog(user), ex.Message);
                source = "stale_cache";
                if (_placements.TryGet(user, out cached, out _))
                {
                    // An expired placement beats a guess while Consul is away.
                    placed = cached.BackendId;
                }
                else if (_options.PlacementRequired)
                {
                    _metrics.DirectoryLookup("unavailable");
                    return new DirectoryResult(null, DirectorySource.Placement, "Consul unreachable and no cached placement");
                }
                else
                {
                    placed = null;
                }
            }
        }

        if (placed is not null)
        {
            _metrics.DirectoryLookup(source);
            return Resolve(view, placed);
        }

        if (_options.PlacementRequired)
        {
            _metrics.DirectoryLookup(source);
            return new DirectoryResult(null, DirectorySource.Placement, "user has no placement");
        }

        _metrics.DirectoryLookup("hash");
        var backend = view.Hash(user, _suspects.IsSuspect);
        return new DirectoryResult(backend, DirectorySource.Hash, backend is null ? "no healthy active backend" : null);
    }

    /// <summary>
    /// Where the user would go now, from memory only (overrides, cached placement, hash), and whether that is
    /// an explicit placement.
    /// </summary>
    internal (BackendEndpoint? Backend, bool Placed) Expected(string user, DirectoryView view)
    {
        if (_overrides.TryGetValue(user, out var overridden))
        {
            return (Resolve(view, overridden).Backend, true);
        }

        if (_placements.TryGet(user, out var cached, out _) && cached.BackendId is not null)
        {
            return (Resolve(view, cached.BackendId).Backend, true);
        }

        return (_options.PlacementRequired ? null : view.Hash(user, _ => false), false);
    }

    protected override Task ExecuteAsync(CancellationToken stoppingToken) => Task.WhenAll(
        WatchAsync(_health, (index, ct) => _client.HealthServiceAsync(_consul.ServiceName, index, ct), OnInstances, stoppingToken),
        WatchAsync(_backendStates, (index, ct) => _client.ListAsync($"{_consul.KeyPrefix}/backends/", index, ct), OnStates, stoppingToken),
        WatchAsync(_overridesWatch, (index, ct) => _client.ListAsync($"{_consul.KeyPrefix}/overrides/", index, ct), OnOverrides, stoppingToken),
        RefreshPlacementsAsync(stoppingToken),
        KickAsync(stoppingToken));

    private static DirectoryResult Resolve(DirectoryView view, string backendId)
    {
        if (!view.ById.TryGetValue(backendId, out var status))
        {
            return new DirectoryResult(null, DirectorySource.Placement, $"placement target '{backendId}' is not a known backend");
        }

        if (status.State == BackendState.Disabled)
        {
            return new DirectoryResult(null, DirectorySource.Placement, $"placement target '{backendId}' is disabled");
        }

        if (!status.Healthy)
        {
            return new DirectoryResult(null, DirectorySource.Placement, $"placement target '{backendId}' is not healthy");
        }

        // A draining backend takes no new users by hashing, but a user placed there has nowhere else to go.
        return new DirectoryResult(status.Endpoint, DirectorySource.Placement);
    }

    private async Task<string?> ReadPlacementAsync(string user, CancellationToken cancellationToken)
    {
        var result = await _client.GetValueAsync(_client.Key("users", user), cancellationToken);
        var id = result.Value is null ? null : Encoding.UTF8.GetString(result.Value).Trim();
        return string.IsNullOrEmpty(id) ? null : id;
    }

    /// <summary>
    /// One blocking-query loop: index rules of the Consul docs, a floor between queries, jittered exponential
    /// backoff on errors. The last good result keeps serving while it fails.
    /// </summary>
    private async Task WatchAsync<T>(WatchState watch, Func<ulong, CancellationToken, Task<ConsulResult<T>>> query, Action<T> apply, CancellationToken stoppingToken)
    {
        ulong index = 0;
        var retryDelay = _consul.RetryDelay;
        while (!stoppingToken.IsCancellationRequested)
        {
            var started = _timeProvider.GetTimestamp();
            try
            {
                var result = await query(index, stoppingToken);
                if (BlockingIndex.Changed(index, result.Index))
                {
                    apply(result.Value);
                }

                index = BlockingIndex.Next(index, result.Index);
                watch.Succeeded(_timeProvider.GetTimestamp());
                if (watch.Failing is not null)
                {
                    watch.Failing = null;
                    Log.ConsulRecovered(_logger, watch.Name);
                }

                retryDelay = _consul.RetryDelay;
                var elapsed = _timeProvider.GetElapsedTime(started);
                if (elapsed < s_minQueryInterval)
                {
                    await Task.Delay(s_minQueryInterval - elapsed, _timeProvider, stoppingToken);
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is ConsulException or JsonException or FormatException)
            {
                watch.Failing = ex.Message;
                Log.ConsulWatchFailed(_logger, watch.Name, ex.Message, retryDelay.TotalSeconds);
                // Full jitter between half and the whole delay, so replicas do not retry in step.
                var delay = retryDelay * (0.5 + (Random.Shared.NextDouble() / 2));
                retryDelay = TimeSpan.FromTicks(Math.Min(retryDelay.Ticks * 2, _consul.MaxRetryDelay.Ticks));
                try
                {
                    await Task.Delay(delay, _timeProvider, stoppingToken);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    private void OnInstances(List<ConsulServiceEntry> instances)
    {
        if (instances.Count == 0 && _instances is { Count: > 0 })
        {
            // A catalog that suddenly lists nothing is far more likely a Consul that lost its state, or an ACL
            // token that lost its rights, than every backend deregistering at once: keep serving (and keep the
            // live sessions) with the last view.
            Log.EmptyCatalogIgnored(_logger, _consul.ServiceName);
            return;
        }

        lock (_viewLock)
        {
            _instances = instances;
            RebuildView();
        }
    }

    private void OnStates(List<ConsulKvEntry> entries)
    {
        var states = new Dictionary<string, (BackendState, double?)>(StringComparer.Ordinal);
        var prefix = $"{_consul.KeyPrefix}/backends/";
        foreach (var entry in entries)
        {
            var id = entry.Key.StartsWith(prefix, StringComparison.Ordinal) ? entry.Key[prefix.Length..] : entry.Key;
            if (id.Length == 0)
            {
                continue;
            }

            if (TryParseState(entry.DecodeValue(), out var state, out var weight))
            {
                states[id] = (state, weight);
            }
            else
            {
                Log.BadBackendState(_logger, id);
            }
        }

        lock (_viewLock)
        {
            _states = states;
            RebuildView();
        }
    }

    private void OnOverrides(List<ConsulKvEntry> entries)
    {
        var prefix = $"{_consul.KeyPrefix}/overrides/";
        var overrides = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var entry in entries)
        {
            var user = entry.Key.StartsWith(prefix, StringComparison.Ordinal) ? entry.Key[prefix.Length..] : "";
            var backend = Encoding.UTF8.GetString(entry.DecodeValue()).Trim();
            if (user.Length > 0 && backend.Length > 0)
            {
                overrides[user] = backend;
            }
        }

        _overrides = overrides;
        Reconcile(_sessions.Snapshot());
    }

    /// <summary>State values: JSON {"state":"draining","weight":50} or plain "draining".</summary>
    internal static bool TryParseState(byte[] value, out BackendState state, out double? weight)
    {
        state = BackendState.Active;
        weight = null;
        var text = Encoding.UTF8.GetString(value).Trim();
        if (text.Length == 0)
        {
            return true;
        }

        string? stateText = text;
        if (text.StartsWith('{'))
        {
            try
            {
                using var document = JsonDocument.Parse(text);
                stateText = document.RootElement.TryGetProperty("state", out var s) ? s.GetString() : null;
                if (document.RootElement.TryGetProperty("weight", out var w) && w.TryGetDouble(out var parsed) && parsed > 0)
                {
                    weight = parsed;
                }
            }
            catch (JsonException)
            {
                return false;
            }
        }

        if (stateText is null)
        {
            return true;
        }

        return Enum.TryParse(stateText, ignoreCase: true, out state) && Enum.IsDefined(state);
    }

    private void RebuildView()
    {
        if (_instances is null)
        {
            return;
        }

        var backends = new List<BackendStatus>(_instances.Count);
        foreach (var instance in _instances)
        {
            var service = instance.Service;
            if (string.IsNullOrEmpty(service.ID))
            {
                continue;
            }

            var meta = service.Meta ?? [];
            _states.TryGetValue(service.ID, out var configured);
            var weight = configured.Weight ?? (meta.TryGetValue("weight", out var w) && double.TryParse(w, NumberStyles.Float, CultureInfo.InvariantCulture, out var mw) && mw > 0 ? mw : 100);
            var endpoint = new BackendEndpoint(
                service.ID,
                string.IsNullOrEmpty(service.Address) ? instance.Node.Address : service.Address,
                service.Port,
                weight,
                meta.TryGetValue("tls", out var tls) && Enum.TryParse<BackendTls>(tls, ignoreCase: true, out var parsedTls) ? parsedTls : BackendTls.None,
                meta.GetValueOrDefault("tls_server_name"),
                meta.TryGetValue("proxy_protocol", out var pp) && bool.TryParse(pp, out var usesProxy) && usesProxy,
                meta.TryGetValue("authentication", out var auth) && Enum.TryParse<BackendAuthentication>(auth, ignoreCase: true, out var parsedAuth) ? parsedAuth : BackendAuthentication.Auto);
            var healthy = instance.Checks.All(c => string.Equals(c.Status, "passing", StringComparison.OrdinalIgnoreCase));
            backends.Add(new BackendStatus(endpoint, healthy, configured == default ? BackendState.Active : configured.State));
        }

        var view = new DirectoryView(backends, _timeProvider.GetUtcNow());
        var previous = _view;
        foreach (var backend in view.ById.Values)
        {
            if (backend.Healthy && previous.ById.TryGetValue(backend.Endpoint.Id, out var before) && !before.Healthy)
            {
                // Consul saw it fail and now pass again: that clears a local suspicion at once.
                _suspects.Clear(backend.Endpoint.Id);
            }
        }

        _view = view;
        if (!SameView(previous, view))
        {
            Log.DirectoryViewChanged(_logger, view.ById.Count, view.Candidates.Count, string.Join(",", view.Candidates.Select(c => c.Id)));
            Reconcile(_sessions.Snapshot());
        }
    }

    private static bool SameView(DirectoryView a, DirectoryView b) =>
        a.ById.Count == b.ById.Count && a.ById.All(kv => b.ById.TryGetValue(kv.Key, out var other) &&
            other.Healthy == kv.Value.Healthy && other.State == kv.Value.State &&
            other.Endpoint.Weight == kv.Value.Endpoint.Weight && other.Endpoint.Host == kv.Value.Endpoint.Host &&
            other.Endpoint.Port == kv.Value.Endpoint.Port);

    /// <summary>Kicks the live sessions that the current view and placements put elsewhere.</summary>
    internal void Reconcile(IEnumerable<LiveSession> sessions)
    {
        var view = _view;
        var kicks = new List<(LiveSession Session, string Reason)>();
        foreach (var session in sessions)
        {
            var reason = Decide(session, view);
            if (reason is not null)
            {
                kicks.Add((session, reason));
            }
        }

        if (kicks.Count > 0)
        {
            _kicks.Writer.TryWrite(kicks);
        }
    }

    /// <summary>
    /// Whether a live session must end, and why. Only deliberate changes move sessions: a disabled backend, a
    /// changed placement or override, or a hash that now prefers another backend while the session's own backend
    /// is healthy and active (a backend joined or came back, a weight changed). Health alone never kicks: a dead
    /// backend's sessions end by themselves, and a Consul that restarts (checks start critical, services
    /// re-register one by one) must not disconnect anybody.
    /// </summary>
    private string? Decide(LiveSession session, DirectoryView view)
    {
        if (!view.ById.TryGetValue(session.Backend.Id, out var current))
        {
            return null;
        }

        if (current.State == BackendState.Disabled)
        {
            return "backend disabled";
        }

        var (expected, placed) = Expected(session.User, view);
        if (expected is null || expected.Id == session.Backend.Id)
        {
            return null;
        }

        return placed || current.IsCandidate ? "moved" : null;
    }

    /// <summary>
    /// Carries out kicks at random moments within the spread window, so that the reconnects of thousands of
    /// clients do not arrive as one storm. One loop, fed by <see cref="Reconcile"/>.
    /// </summary>
    private async Task KickAsync(CancellationToken stoppingToken)
    {
        try
        {
            await foreach (var kicks in _kicks.Reader.ReadAllAsync(stoppingToken))
            {
                var schedule = kicks.Select(k => (Delay: _options.KickSpread * Random.Shared.NextDouble(), k.Session, k.Reason)).OrderBy(k => k.Delay).ToArray();
                var elapsed = TimeSpan.Zero;
                foreach (var (delay, session, reason) in schedule)
                {
                    if (delay > elapsed)
                    {
                        await Task.Delay(delay - elapsed, _timeProvider, stoppingToken);
                        elapsed = delay;
                    }

                    // Never throws (a kick only shuts the session's sockets down): the loop reaches every session.
                    if (session.Kick(reason))
                    {
                        Log.SessionKicked(_logger, UserNames.ForLog(session.User), session.Backend.Id, reason);
                    }
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Shutting down: the sessions end with the host.
        }
    }

    /// <summary>
    /// Placements of users with live sessions are re-read periodically (rate-limited), because the users/
    /// prefix is too large to watch: a changed placement moves the user's sessions within one interval.
    /// </summary>
    private async Task RefreshPlacementsAsync(CancellationToken stoppingToken)
    {
        var pause = TimeSpan.FromSeconds(1.0 / _options.PlacementRefreshRate);
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(_options.PlacementRefreshInterval, _timeProvider, stoppingToken);
                var live = _sessions.Snapshot();
                foreach (var user in live.Select(s => s.User).Distinct(StringComparer.Ordinal))
                {
                    _placements.TryGet(user, out var before, out _);
                    string? now;
                    try
                    {
                        now = await ReadPlacementAsync(user, stoppingToken);
                    }
                    catch (ConsulException)
                    {
                        // Consul away: keep everything as it is (never drop sessions because of Consul).
                        break;
                    }

                    _placements.Set(user, now);
                    if (!string.Equals(before.BackendId, now, StringComparison.Ordinal))
                    {
                        Reconcile(live.Where(s => s.User == user));
                    }

                    await Task.Delay(pause, _timeProvider, stoppingToken);
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
        }
    }

    /// <summary>
    /// One watch's standing, its own so that one recovering does not hide another that still fails: the error of
    /// its last attempt while it fails, and when it last succeeded.
    /// </summary>
    private sealed class WatchState(string name)
    {
        private long _lastSuccessTicks;
        private volatile string? _failing;

        public string Name { get; } = name;

        public string? Failing
        {
            get => _failing;
            set => _failing = value;
        }

        public void Succeeded(long timestamp) => Interlocked.Exchange(ref _lastSuccessTicks, timestamp);

        public double AgeSeconds(TimeProvider time) =>
            Interlocked.Read(ref _lastSuccessTicks) is var ticks and not 0 ? time.GetElapsedTime(ticks).TotalSeconds : double.PositiveInfinity;
    }
}
