using System.Collections.Concurrent;
using System.Diagnostics.Metrics;

namespace ImapProxy.Telemetry;

/// <summary>
/// A counter's values per tag set, kept here and read by an observable instrument when the exporter collects. An add is
/// a lock-free dictionary lookup and an interlocked add; a synchronous instrument's costs a listener callback and the
/// SDK's own lookup of the tags, about 1 µs each (profiled: 12 measurements, 2.3% of a plain login's CPU). A tag set
/// stays once added (a backend that left reports 0), as it did in the SDK's aggregation of a synchronous counter.
/// </summary>
/// <typeparam name="TKey">The tag values: a string, or a tuple of them.</typeparam>
internal sealed class TaggedCounts<TKey>(Func<TKey, KeyValuePair<string, object?>[]> tags)
    where TKey : notnull
{
    private readonly ConcurrentDictionary<TKey, Count> _counts = new();

    public void Add(TKey key, long delta)
    {
        if (!_counts.TryGetValue(key, out var count))
        {
            count = _counts.GetOrAdd(key, static (key, tags) => new Count(tags(key)), tags);
        }

        Interlocked.Add(ref count.Value, delta);
    }

    /// <summary>Every tag set added to so far, with its total.</summary>
    public List<Measurement<long>> Observe()
    {
        var measurements = new List<Measurement<long>>(); // not sized by Count, which takes every bucket's lock
        foreach (var pair in _counts)
        {
            measurements.Add(new Measurement<long>(Volatile.Read(ref pair.Value.Value), pair.Value.Tags));
        }

        return measurements;
    }

    private sealed class Count(KeyValuePair<string, object?>[] tags)
    {
        public long Value;

        public KeyValuePair<string, object?>[] Tags { get; } = tags;
    }
}
