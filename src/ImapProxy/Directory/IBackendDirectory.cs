using ImapProxy.Backends;

namespace ImapProxy.Directory;

public enum DirectorySource
{
    /// <summary>Weighted rendezvous hashing over the usable backends.</summary>
    Hash,
    /// <summary>An explicit per-user placement (KV users/) or override (KV overrides/).</summary>
    Placement,
}

/// <summary>
/// Where a user goes, and why. <see cref="Backend"/> is null when no backend can take the user; then
/// <see cref="Detail"/> says why (for logs).
/// </summary>
public readonly record struct DirectoryResult(BackendEndpoint? Backend, DirectorySource Source, string? Detail = null);

/// <summary>Finds the backend that serves a (normalised) user.</summary>
public interface IBackendDirectory
{
    /// <summary>True once the directory has a view of the backends (readiness).</summary>
    bool HasView { get; }

    /// <summary>Why the view may be out of date (Consul unreachable), or null (readiness detail).</summary>
    string? Degraded { get; }

    ValueTask<DirectoryResult> FindBackendAsync(string user, CancellationToken cancellationToken);

    /// <summary>A backend refused a connection: leave it out of hashing for a while.</summary>
    void MarkSuspect(string backendId);
}
