using System.Collections.Concurrent;
using System.Net;
using ImapProxy.Backends;
using ImapProxy.Directory;
using ImapProxy.Splice;

namespace ImapProxy.Connections;

/// <summary>
/// A spliced session as the rest of the proxy sees it: who, where, and how to end it. A kick may arrive (from a
/// spread-out batch) after the session ended; it then does nothing.
/// </summary>
internal sealed class LiveSession
{
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

    /// <summary>Ends the splice; kicks and the shutdown go through it.</summary>
    public SpliceControl Control { get; } = new();

    /// <summary>Why the session was kicked, or null.</summary>
    public string? KickReason => Volatile.Read(ref _kickReason);

    /// <summary>Ends the session (once; later calls are ignored). True if this call kicked it.</summary>
    public bool Kick(string reason)
    {
        if (Interlocked.CompareExchange(ref _kickReason, reason, null) is not null)
        {
            return false;
        }

        Control.RequestStop();
        return true;
    }

    /// <summary>Ends the session because the shutdown grace is over (<see cref="KickReason"/> stays null).</summary>
    public void EndForShutdown() => Control.RequestStop();
}

/// <summary>Every live spliced session of this replica, for kicks, moves and the admin API.</summary>
internal sealed class SessionRegistry
{
    private readonly ConcurrentDictionary<LiveSession, byte> _sessions = new();

    public int Count => _sessions.Count;

    public void Add(LiveSession session) => _sessions.TryAdd(session, 0);

    public void Remove(LiveSession session) => _sessions.TryRemove(session, out _);

    public LiveSession[] Snapshot() => _sessions.Keys.ToArray();

    /// <summary>Ends every live session (the shutdown grace is over).</summary>
    public void EndAll()
    {
        foreach (var session in _sessions.Keys)
        {
            // Never throws: a stop only shuts sockets down (SpliceControl), so the sweep reaches every session.
            session.EndForShutdown();
        }
    }
}
