using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace ImapProxy.Backends;

/// <summary>
/// The addresses of backends given by host name (a Kubernetes service, a StatefulSet pod's name), looked up once per
/// <c>Backends:DnsRefresh</c> instead of at every login. A login finds them in memory; once they are older than the
/// refresh interval it still uses them while one lookup, in the background, replaces them (a name server that is slow
/// or down delays no login, and its failures keep the last good answer). Only a name never resolved, or one
/// <see cref="Forget"/> dropped because none of its addresses took a connection, makes a login wait for the lookup;
/// logins waiting for the same name share one lookup.
/// </summary>
internal sealed class BackendAddresses
{
    /// <summary>Names kept at most (backends come and go in Consul); past it the cache starts afresh.</summary>
    internal const int MaxNames = 4096;

    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.OrdinalIgnoreCase);
    private readonly TimeProvider _timeProvider;
    private readonly TimeSpan _refresh;
    private readonly Func<string, CancellationToken, Task<IPAddress[]>> _lookUp;

    /// <summary>
    /// A cache refreshing each name after <paramref name="refresh"/>. <paramref name="lookUp"/> stands in for the
    /// system's resolver (<see cref="Dns.GetHostAddressesAsync(string, CancellationToken)"/>) in tests.
    /// </summary>
    public BackendAddresses(TimeProvider timeProvider, TimeSpan refresh, Func<string, CancellationToken, Task<IPAddress[]>>? lookUp = null)
    {
        _timeProvider = timeProvider;
        _refresh = refresh;
        _lookUp = lookUp ?? Dns.GetHostAddressesAsync;
    }

    /// <summary>
    /// The addresses of <paramref name="host"/>, in the resolver's order; a name that resolves to none fails with a
    /// <see cref="SocketException"/> (HostNotFound), as the resolver's own failures do.
    /// </summary>
    public ValueTask<IPAddress[]> ResolveAsync(string host, CancellationToken cancellationToken)
    {
        if (!_entries.TryGetValue(host, out var entry))
        {
            if (_entries.Count >= MaxNames)
            {
                _entries.Clear(); // every name in use is looked up once more; the ones gone are dropped
            }

            entry = _entries.GetOrAdd(host, static (host, cache) => new Entry(cache, host), this);
        }

        return entry.GetAsync(cancellationToken);
    }

    /// <summary>None of <paramref name="host"/>'s addresses took a connection: the next login looks the name up again.</summary>
    public void Forget(string host) => _entries.TryRemove(host, out _);

    /// <summary>One name: its last good answer, when it was had, and the lookup under way (at most one).</summary>
    private sealed class Entry(BackendAddresses cache, string host)
    {
        private readonly Lock _lock = new();
        private IPAddress[]? _addresses;
        private long _resolvedAt;
        private Task<IPAddress[]>? _lookUp;

        public ValueTask<IPAddress[]> GetAsync(CancellationToken cancellationToken)
        {
            Task<IPAddress[]> lookUp;
            lock (_lock)
            {
                if (_addresses is { } known)
                {
                    if (cache._timeProvider.GetElapsedTime(_resolvedAt) >= cache._refresh)
                    {
                        _ = StartLookUp(); // in the background: this login goes on with what is known
                    }

                    return ValueTask.FromResult(known);
                }

                lookUp = StartLookUp();
            }

            return new ValueTask<IPAddress[]>(lookUp.WaitAsync(cancellationToken));
        }

        /// <summary>The lookup under way, or a new one. Under the lock.</summary>
        private Task<IPAddress[]> StartLookUp() => _lookUp ??= LookUpAsync();

        private async Task<IPAddress[]> LookUpAsync()
        {
            await Task.Yield(); // the caller holds the lock; the resolver runs outside it
            try
            {
                var addresses = await cache._lookUp(host, CancellationToken.None);
                if (addresses.Length == 0)
                {
                    throw new SocketException((int)SocketError.HostNotFound);
                }

                lock (_lock)
                {
                    _addresses = addresses;
                    _resolvedAt = cache._timeProvider.GetTimestamp();
                }

                return addresses;
            }
            finally
            {
                lock (_lock)
                {
                    _lookUp = null; // a failure leaves the last good answer (if any) for the next refresh to replace
                }
            }
        }
    }
}
