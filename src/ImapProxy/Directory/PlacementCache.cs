using System.Collections.Concurrent;

namespace ImapProxy.Directory;

/// <summary>
/// Per-user placements read from Consul, with separate lifetimes for "placed on X" and "not placed". Expired
/// entries stay usable as a last resort while Consul is unreachable. Bounded: when full, expired entries go
/// first, then everything (a refill costs one read per login).
/// </summary>
internal sealed class PlacementCache(TimeSpan positiveTtl, TimeSpan negativeTtl, int capacity, TimeProvider timeProvider)
{
    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.Ordinal);

    /// <summary>A placement: the backend id, or null for "not placed".</summary>
    public readonly record struct Entry(string? BackendId, DateTimeOffset Expires);

    public int Count => _entries.Count;

    /// <summary>The entry if present; <paramref name="fresh"/> says whether it is still within its lifetime.</summary>
    public bool TryGet(string user, out Entry entry, out bool fresh)
    {
        if (_entries.TryGetValue(user, out entry))
        {
            fresh = timeProvider.GetUtcNow() < entry.Expires;
            return true;
        }

        fresh = false;
        return false;
    }

    public void Set(string user, string? backendId)
    {
        if (_entries.Count >= capacity && !_entries.ContainsKey(user))
        {
            Evict();
        }

        _entries[user] = new Entry(backendId, timeProvider.GetUtcNow() + (backendId is null ? negativeTtl : positiveTtl));
    }

    private void Evict()
    {
        var now = timeProvider.GetUtcNow();
        foreach (var (user, entry) in _entries)
        {
            if (entry.Expires <= now)
            {
                _entries.TryRemove(user, out _);
            }
        }

        if (_entries.Count >= capacity)
        {
            _entries.Clear();
        }
    }
}
