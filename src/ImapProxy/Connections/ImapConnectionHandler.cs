using ImapProxy.Configuration;
using Microsoft.AspNetCore.Connections;

namespace ImapProxy.Connections;

/// <summary>
/// Kestrel's entry point for one IMAP listener: one <see cref="ClientSession"/> per connection. One handler per
/// listener, so the listener is known without a connection feature (a feature costs a slot in every connection's
/// feature list for the whole life of the session).
/// </summary>
internal sealed class ImapConnectionHandler(ImapSessionServices services, ListenerOptions listener) : ConnectionHandler
{
    public override Task OnConnectedAsync(ConnectionContext connection) => new ClientSession(connection, listener, services).RunAsync();
}
