using System.Collections.Concurrent;
using System.Net;
using ImapProxy.Backends;
using ImapProxy.Directory;

namespace ImapProxy.Connections;

/// <summary>
/// A spliced session as the rest of the proxy sees it: who, where, and how to end it. Not disposable on purpose:
/// a kick may arrive (from a spread-out batch) after the session ended, and must then find a live token source
/// (one without a timer needs no disposal).
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "A timer-less token source holds nothing to release; disposing it would race late kicks.")]
internal sealed class LiveSession
{
    private readonly CancellationTokenSource _kick = new();
    private string? _kickReason;

    public LiveSession(string user, BackendEndpoint backend, DirectorySource source, IPEndPoint client, string sessionId, DateTimeOffset started)
    {
        User = user;
        Backend = backend;
        Source = source;
        Client = client;
        SessionId = sessionId;
        Started = started;
    }

    /// <summary>The normalised user name (the directory's key).</summary>
    public string User { get; }

    public BackendEndpoint Backend { get; }

    public DirectorySource Source { get; }

    public IPEndPoint Client { get; }

    public string SessionId { get; }

    public DateTimeOffset Started { get; }

    public CancellationToken KickToken => _kick.Token;

    /// <summary>Why the session was kicked, or null.</summary>
    public string? KickReason => Volatile.Read(ref _kickReason);

    /// <summary>Ends the session (once; later calls are ignored). True if this call kicked it.</summary>
    public bool Kick(string reason)
    {
        if (Interlocked.CompareExchange(ref _kickReason, reason, null) is not null)
        {
            return false;
        }

        _kick.Cancel();
        return true;
    }
}

/// <summary>Every live spliced session of this replica, for kicks, moves and the admin API.</summary>
internal sealed class SessionRegistry
{
    private readonly ConcurrentDictionary<LiveSession, byte> _sessions = new();

    public int Count => _sessions.Count;

    public void Add(LiveSession session) => _sessions.TryAdd(session, 0);

    public void Remove(LiveSession session) => _sessions.TryRemove(session, out _);

    public LiveSession[] Snapshot() => _sessions.Keys.ToArray();
}
