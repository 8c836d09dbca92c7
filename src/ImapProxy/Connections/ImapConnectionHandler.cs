using Microsoft.AspNetCore.Connections;

namespace ImapProxy.Connections;

/// <summary>Kestrel's entry point for every IMAP listener: one <see cref="ClientSession"/> per connection.</summary>
internal sealed class ImapConnectionHandler(ImapSessionServices services) : ConnectionHandler
{
    public override Task OnConnectedAsync(ConnectionContext connection)
    {
        var listener = connection.Features.Get<ListenerFeature>()
            ?? throw new InvalidOperationException("IMAP connection without a listener feature.");
        return new ClientSession(connection, listener.Options, services).RunAsync();
    }
}
