using System.Buffers;
using System.Net;
using ImapProxy.Configuration;
using ImapProxy.Connections.Transport;
using ImapProxy.Protocol.ProxyProtocol;
using ImapProxy.Telemetry;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;

namespace ImapProxy.Connections;

/// <summary>
/// Reads the PROXY protocol header (v1 or v2) a load balancer puts before the client's bytes, before any TLS,
/// and makes the address it carries the connection's remote address everywhere (logs, metrics, ID, trusted
/// networks, throttling). Only trusted balancers may send it; a missing, late or malformed header closes the
/// connection.
/// </summary>
internal sealed class ProxyProtocolMiddleware(ListenerOptions listener, TimeSpan timeout, TimeProvider timeProvider, ILogger logger)
{
    private readonly IPNetwork[] _trusted = listener.ProxyProtocolTrustedNetworks.Select(n => IPNetwork.Parse(n)).ToArray();

    public async Task<bool> InvokeAsync(ImapSocketConnection connection, ConnectionHandler next)
    {
        var peer = connection.RemoteEndPoint as IPEndPoint;
        var address = peer?.Address is { IsIPv4MappedToIPv6: true } mapped ? mapped.MapToIPv4() : peer?.Address;
        if (address is null || !_trusted.Any(n => n.Contains(address)))
        {
            Log.ProxyHeaderRejected(logger, peer?.ToString() ?? "?", listener.Name, "peer is not a trusted load balancer");
            return false;
        }

        // The read sees a client that closes by itself, and the listeners' abort at shutdown ends it too.
        using var deadline = new CancellationTokenSource(timeout, timeProvider);
        var input = connection.Transport.Input;
        try
        {
            while (true)
            {
                var result = await input.ReadAsync(deadline.Token);
                var reader = new SequenceReader<byte>(result.Buffer);
                var status = ProxyHeaderParser.TryParse(ref reader, out var header);
                if (status == ProxyHeaderStatus.Complete)
                {
                    input.AdvanceTo(reader.Position);
                    if (header.Source is not null)
                    {
                        connection.RemoteEndPoint = header.Source;
                        connection.LocalEndPoint = header.Destination;
                    }

                    break;
                }

                input.AdvanceTo(result.Buffer.Start, result.Buffer.End);
                if (status == ProxyHeaderStatus.Invalid || result.IsCompleted)
                {
                    Log.ProxyHeaderRejected(logger, peer!.ToString(), listener.Name, status == ProxyHeaderStatus.Invalid ? "malformed header" : "closed before the header");
                    return false;
                }
            }
        }
        catch (OperationCanceledException)
        {
            Log.ProxyHeaderRejected(logger, peer!.ToString(), listener.Name, "no header in time");
            return false;
        }

        // Awaited here, not left to the caller: the session hands over to its splice by completing, and then this frame
        // is gone as well.
        return await next(connection);
    }
}
