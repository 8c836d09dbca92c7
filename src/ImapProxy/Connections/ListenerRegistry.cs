using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace ImapProxy.Connections;

/// <summary>The endpoints actually bound (port 0 becomes a real port), by listener name.</summary>
public sealed class ListenerRegistry
{
    private readonly ConcurrentDictionary<string, Func<IPEndPoint?>> _listeners = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>An IMAP listener, bound already.</summary>
    internal void Add(string name, IPEndPoint endpoint) => _listeners[name] = () => endpoint;

    /// <summary>A Kestrel listener (the admin endpoint), bound when Kestrel starts.</summary>
    internal void Add(string name, ListenOptions options) => _listeners[name] = () => options.IPEndPoint;

    /// <summary>The bound endpoint of a listener ("admin" for the admin HTTP endpoint), after start.</summary>
    public IPEndPoint GetEndPoint(string name) =>
        _listeners.TryGetValue(name, out var endpoint)
            ? endpoint() ?? throw new InvalidOperationException($"Listener '{name}' is not an IP endpoint.")
            : throw new KeyNotFoundException($"No listener named '{name}'.");

    public IReadOnlyCollection<string> Names => _listeners.Keys.ToArray();
}
