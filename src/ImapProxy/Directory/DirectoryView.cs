using System.Collections.Frozen;
using ImapProxy.Backends;

namespace ImapProxy.Directory;

/// <summary>Operator-set state of a backend (KV &lt;prefix&gt;/backends/&lt;id&gt;).</summary>
public enum BackendState
{
    /// <summary>Takes new users.</summary>
    Active,
    /// <summary>Takes no new users, keeps its live sessions.</summary>
    Draining,
    /// <summary>Takes nobody; its live sessions are kicked.</summary>
    Disabled,
}

/// <summary>A backend as the directory knows it: where it is, whether Consul says it is healthy, its state.</summary>
public sealed record BackendStatus(BackendEndpoint Endpoint, bool Healthy, BackendState State)
{
    /// <summary>May be chosen by hashing for a new login.</summary>
    public bool IsCandidate => Healthy && State == BackendState.Active;
}

/// <summary>
/// An immutable snapshot of every backend the directory knows, swapped atomically when Consul reports a change.
/// Every replica with the same snapshot hashes every user to the same backend.
/// </summary>
public sealed class DirectoryView
{
    public DirectoryView(IEnumerable<BackendStatus> backends, DateTimeOffset builtAt)
    {
        ArgumentNullException.ThrowIfNull(backends);
        ById = backends.ToFrozenDictionary(b => b.Endpoint.Id, StringComparer.Ordinal);
        Candidates = ById.Values.Where(b => b.IsCandidate).Select(b => b.Endpoint).OrderBy(b => b.Id, StringComparer.Ordinal).ToArray();
        BuiltAt = builtAt;
    }

    public static DirectoryView Empty { get; } = new([], DateTimeOffset.MinValue);

    public FrozenDictionary<string, BackendStatus> ById { get; }

    /// <summary>Healthy, active backends, in id order.</summary>
    public IReadOnlyList<BackendEndpoint> Candidates { get; }

    public DateTimeOffset BuiltAt { get; }

    /// <summary>Rendezvous hashing over the candidates that are not locally suspected.</summary>
    public BackendEndpoint? Hash(string user, Func<string, bool> isSuspect)
    {
        ArgumentNullException.ThrowIfNull(isSuspect);
        var candidates = Candidates;
        if (candidates.Any(c => isSuspect(c.Id)))
        {
            // If every candidate is suspect, trying one beats refusing everybody.
            var trusted = candidates.Where(c => !isSuspect(c.Id)).ToArray();
            candidates = trusted.Length > 0 ? trusted : candidates;
        }

        return RendezvousHash.Pick(user, candidates);
    }
}
