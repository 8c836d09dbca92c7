using System.Net.Security;
using ImapProxy.Configuration;
using ImapProxy.Telemetry;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace ImapProxy.Tls;

/// <summary>
/// Applies <c>Performance:ReleaseTlsBuffers</c> to every authenticated <see cref="SslStream"/>, on both sides of
/// the proxy, and says once in the log when the runtime does not allow it (the proxy's own OpenSSL context sets it
/// for all its connections); counts every handshake for <see cref="AllocatorTrim"/>.
/// </summary>
internal sealed class TlsBufferPolicy(IOptions<ImapProxyOptions> options, AllocatorTrim allocatorTrim, ILogger<TlsBufferPolicy> logger)
{
    private readonly bool _enabled = options.Value.Performance.ReleaseTlsBuffers;
    private int _warned;

    /// <summary>Call right after the handshake, before the stream's first read or write.</summary>
    public void Apply(Stream stream)
    {
        allocatorTrim.OnHandshake();
        if (_enabled && stream is SslStream runtimeTls && !OpenSslBuffers.TryRelease(runtimeTls) && Interlocked.Exchange(ref _warned, 1) == 0)
        {
            Log.TlsBuffersNotReleased(logger, OpenSslBuffers.UnavailableReason ?? "the stream has no OpenSSL handle");
        }
    }
}
