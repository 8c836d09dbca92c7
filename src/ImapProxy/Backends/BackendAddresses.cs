using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace ImapProxy.Backends;

/// <summary>
/// The addresses of backends given by host name (a Kubernetes service, a StatefulSet pod's name), looked up once per
/// <c>Backends:DnsRefresh</c> instead of at every login. A login finds them in memory; once they are older than the
/// refresh interval it still uses them while one lookup, in the background, replaces them: a name server that is slow
/// or down delays no login, and its failures keep the last good answer for up to <see cref="StaleLimit"/> intervals
/// (a name it says is gone loses it at once). Only a name never resolved, or one <see cref="Forget"/> dropped because
/// none of its addresses took a connection, makes a login wait for the lookup; logins waiting for the same name share
/// one lookup, and a failed one is not tried again for <see cref="RetryAfterFailure"/>.
/// </summary>
internal sealed class BackendAddresses
{
    /// <summary>Names kept at most (backends come and go in Consul); past it the cache starts afresh.</summary>
    internal const int MaxNames = 4096;

    /// <summary>How many refresh intervals an answer is still used while every lookup fails (a resolver outage).</summary>
    internal const int StaleLimit = 10;

    /// <summary>How soon a failed lookup is tried again (the refresh interval, when shorter).</summary>
    internal static readonly TimeSpan RetryAfterFailure = TimeSpan.FromSeconds(5);

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
    /// The addresses of <paramref name="host"/>, in the resolver's order. A name that resolves to none fails with a
    /// <see cref="SocketException"/> (HostNotFound), as the resolver's own failures do; a lookup the login waits for
    /// longer than <paramref name="limit"/> with a <see cref="TimeoutException"/>.
    /// </summary>
    public ValueTask<IPAddress[]> ResolveAsync(string host, TimeSpan limit, CancellationToken cancellationToken)
    {
        if (!_entries.TryGetValue(host, out var entry))
        {
            if (_entries.Count >= MaxNames)
            {
                _entries.Clear(); // every name in use is looked up once more; the ones gone are dropped
            }

            entry = _entries.GetOrAdd(host, static (host, cache) => new Entry(cache, host), this);
        }

        return entry.GetAsync(limit, cancellationToken);
    }

    /// <summary>
    /// None of <paramref name="tried"/>, <paramref name="host"/>'s addresses, took a connection: the next login looks
    /// the name up again. An answer that replaced them meanwhile stays.
    /// </summary>
    public void Forget(string host, IPAddress[] tried)
    {
        if (_entries.TryGetValue(host, out var entry) && entry.Holds(tried))
        {
            _entries.TryRemove(KeyValuePair.Create(host, entry));
        }
    }

    /// <summary>Whether a lookup of <paramref name="host"/> is under way (what the tests look at: when the resolver is asked).</summary>
    internal bool IsLookingUp(string host) => LookUpUnderWay(host) is not null;

    /// <summary>
    /// The lookup of <paramref name="host"/> under way, if any: it completes once the cache has taken in the resolver's
    /// answer (what the tests wait for after answering).
    /// </summary>
    internal Task? LookUpUnderWay(string host) => _entries.TryGetValue(host, out var entry) ? entry.UnderWay : null;

    private long Ticks(TimeSpan span) => (long)(span.TotalSeconds * _timeProvider.TimestampFrequency);

    /// <summary>
    /// One name: its last good answer, when it was had, the last failure, when the next lookup is due, and the lookup
    /// under way (at most one).
    /// </summary>
    private sealed class Entry(BackendAddresses cache, string host)
    {
        private readonly Lock _lock = new();
        private IPAddress[]? _addresses;
        private long _resolvedAt;
        private long _nextLookUpAt;
        private SocketError _failure = SocketError.Success;
        private Task<IPAddress[]>? _lookUp;

        public ValueTask<IPAddress[]> GetAsync(TimeSpan limit, CancellationToken cancellationToken)
        {
            Task<IPAddress[]> lookUp;
            lock (_lock)
            {
                var due = cache._timeProvider.GetTimestamp() >= _nextLookUpAt;
                if (_addresses is { } known)
                {
                    if (due)
                    {
                        _ = StartLookUp(); // in the background: this login goes on with what is known
                    }

                    return ValueTask.FromResult(known);
                }

                if (!due && _failure != SocketError.Success)
                {
                    // The lookup failed a moment ago: this login fails at once, not with one more question to the resolver.
                    return ValueTask.FromException<IPAddress[]>(new SocketException((int)_failure));
                }

                lookUp = StartLookUp();
            }

            return new ValueTask<IPAddress[]>(lookUp.WaitAsync(limit, cache._timeProvider, cancellationToken));
        }

        public Task? UnderWay
        {
            get
            {
                lock (_lock)
                {
                    return _lookUp;
                }
            }
        }

        public bool Holds(IPAddress[] addresses)
        {
            lock (_lock)
            {
                return ReferenceEquals(_addresses, addresses);
            }
        }

        /// <summary>The lookup under way, or a new one. Under the lock.</summary>
        private Task<IPAddress[]> StartLookUp()
        {
            if (_lookUp is null)
            {
                _lookUp = Task.Run(LookUpAsync); // the caller holds the lock; the resolver is asked outside it

                // A refresh nobody waits for, or one whose logins stopped waiting: its failure is observed here.
                _lookUp.ContinueWith(static task => _ = task.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            }

            return _lookUp;
        }

        private async Task<IPAddress[]> LookUpAsync()
        {
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
                    _failure = SocketError.Success;
                    _resolvedAt = cache._timeProvider.GetTimestamp();
                    _nextLookUpAt = _resolvedAt + cache.Ticks(cache._refresh);
                }

                return addresses;
            }
            catch (Exception ex)
            {
                // What the resolver refuses as a name (too long, malformed) is a name that does not resolve, as it says
                // for one that is not found: a failed lookup like any other, not a failure of the login's code.
                var error = ex is SocketException socket ? socket.SocketErrorCode : SocketError.HostNotFound;
                lock (_lock)
                {
                    var now = cache._timeProvider.GetTimestamp();
                    _failure = error;
                    _nextLookUpAt = now + cache.Ticks(cache._refresh < RetryAfterFailure ? cache._refresh : RetryAfterFailure);

                    // A name that is gone takes its addresses with it (they may be another server's by now). Otherwise
                    // the resolver failed: the last answer serves on, for a while.
                    if (error is SocketError.HostNotFound or SocketError.NoData || now - _resolvedAt >= cache.Ticks(cache._refresh * StaleLimit))
                    {
                        _addresses = null;
                    }
                }

                if (ex is SocketException)
                {
                    throw;
                }

                throw new SocketException((int)error);
            }
            finally
            {
                lock (_lock)
                {
                    _lookUp = null;
                }
            }
        }
    }
}
