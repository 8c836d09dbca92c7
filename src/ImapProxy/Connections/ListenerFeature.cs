using ImapProxy.Configuration;

namespace ImapProxy.Connections;

/// <summary>Set on every connection by its listener, so one handler serves all IMAP listeners.</summary>
internal sealed class ListenerFeature(ListenerOptions options)
{
    public ListenerOptions Options { get; } = options;

    /// <summary>The session began: the connection got past the listener's TLS handshake, if it has one.</summary>
    public bool SessionStarted { get; set; }
}
