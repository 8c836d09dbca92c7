using ImapProxy.Backends;
using ImapProxy.Configuration;
using Microsoft.Extensions.Options;

namespace ImapProxy.Directory;

/// <summary>Backends from configuration only (deployments without Consul): rendezvous hashing over all of them.</summary>
internal sealed class StaticDirectory : IBackendDirectory
{
    private readonly BackendEndpoint[] _backends;

    public StaticDirectory(IOptions<ImapProxyOptions> options)
    {
        _backends = options.Value.Backends.Static.Select(BackendEndpoint.FromOptions).ToArray();
    }

    public bool HasView => _backends.Length > 0;

    public ValueTask<DirectoryResult> FindBackendAsync(string user, CancellationToken cancellationToken) =>
        ValueTask.FromResult(new DirectoryResult(RendezvousHash.Pick(user, _backends), DirectorySource.Hash));
}
