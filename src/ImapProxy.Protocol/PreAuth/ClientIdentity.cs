using ImapProxy.Protocol.Parsing;

namespace ImapProxy.Protocol.PreAuth;

/// <summary>The field/value pairs of a client's ID command (RFC 2971), kept for forwarding to the backend.</summary>
public sealed class ClientIdentity
{
    /// <summary>RFC 2971 §3.3: at most 30 pairs, fields of 30 octets, values of 1024 octets.</summary>
    public const int MaxPairs = 30;
    public const int MaxFieldLength = 30;
    public const int MaxValueLength = 1024;

    private ClientIdentity(IReadOnlyList<KeyValuePair<byte[], byte[]?>> fields)
    {
        Fields = fields;
    }

    public static ClientIdentity Empty { get; } = new([]);

    /// <summary>Field names and values (null for NIL) in the order the client sent them.</summary>
    public IReadOnlyList<KeyValuePair<byte[], byte[]?>> Fields { get; }

    /// <summary>Validates the ID argument: NIL or a list of string/NIL pairs within the RFC's limits.</summary>
    public static bool TryCreate(IReadOnlyList<ImapArgument> arguments, out ClientIdentity identity)
    {
        identity = Empty;
        if (arguments.Count != 1)
        {
            return false;
        }

        var argument = arguments[0];
        if (argument.Kind == ImapArgumentKind.Nil)
        {
            return true;
        }

        if (argument.Kind != ImapArgumentKind.List || argument.Items.Count % 2 != 0 || argument.Items.Count / 2 > MaxPairs)
        {
            return false;
        }

        var fields = new List<KeyValuePair<byte[], byte[]?>>(argument.Items.Count / 2);
        for (var i = 0; i < argument.Items.Count; i += 2)
        {
            var key = argument.Items[i];
            var value = argument.Items[i + 1];
            if (key.Kind != ImapArgumentKind.Text || key.Value.Length is 0 or > MaxFieldLength)
            {
                return false;
            }

            if (value.Kind == ImapArgumentKind.Nil)
            {
                fields.Add(new(key.Value, null));
            }
            else if (value.Kind == ImapArgumentKind.Text && value.Value.Length <= MaxValueLength)
            {
                fields.Add(new(key.Value, value.Value));
            }
            else
            {
                return false;
            }
        }

        identity = new ClientIdentity(fields);
        return true;
    }
}
