using ImapProxy.Configuration;

namespace ImapProxy.Connections;

/// <summary>Set on every connection by its listener, so one handler serves all IMAP listeners.</summary>
internal sealed class ListenerFeature(ListenerOptions options)
{
    public ListenerOptions Options { get; } = options;
}
