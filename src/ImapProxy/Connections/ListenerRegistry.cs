using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace ImapProxy.Connections;

/// <summary>The endpoints Kestrel actually bound (port 0 becomes a real port), by listener name.</summary>
public sealed class ListenerRegistry
{
    private readonly ConcurrentDictionary<string, ListenOptions> _listeners = new(StringComparer.OrdinalIgnoreCase);

    internal void Add(string name, ListenOptions options) => _listeners[name] = options;

    /// <summary>The bound endpoint of a listener ("admin" for the admin HTTP endpoint), after start.</summary>
    public IPEndPoint GetEndPoint(string name) =>
        _listeners.TryGetValue(name, out var options)
            ? options.IPEndPoint ?? throw new InvalidOperationException($"Listener '{name}' is not an IP endpoint.")
            : throw new KeyNotFoundException($"No listener named '{name}'.");

    public IReadOnlyCollection<string> Names => _listeners.Keys.ToArray();
}
