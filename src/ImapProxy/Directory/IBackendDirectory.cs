using ImapProxy.Backends;

namespace ImapProxy.Directory;

public enum DirectorySource
{
    /// <summary>Weighted rendezvous hashing over the usable backends.</summary>
    Hash,
    /// <summary>An explicit per-user placement.</summary>
    Placement,
}

/// <summary>Where a user goes, and why. <see cref="Backend"/> is null when no backend can take the user.</summary>
public readonly record struct DirectoryResult(BackendEndpoint? Backend, DirectorySource Source);

/// <summary>Finds the backend that serves a (normalised) user.</summary>
public interface IBackendDirectory
{
    /// <summary>True once the directory has a view of the backends (readiness).</summary>
    bool HasView { get; }

    ValueTask<DirectoryResult> FindBackendAsync(string user, CancellationToken cancellationToken);
}
