using System.Text;

namespace ImapProxy.Protocol.Tests.TestSupport;

/// <summary>One way of delivering an input: successive reads, each bringing one or more new segments.</summary>
internal sealed record Delivery(string Name, IReadOnlyList<IReadOnlyList<byte[]>> Reads)
{
    public override string ToString() => Name;
}

/// <summary>Every way of splitting an input that the "split at every byte" rule asks for.</summary>
internal static class Splits
{
    public static byte[] Bytes(string text) => Encoding.Latin1.GetBytes(text);

    public static string Text(ReadOnlySpan<byte> bytes) => Encoding.Latin1.GetString(bytes);

    /// <summary>The whole input in one read.</summary>
    public static Delivery Whole(byte[] input) => new("whole", [[input]]);

    /// <summary>
    /// The whole input in one read; two reads split at each position; one read of two segments split at each
    /// position; one byte per read; one read of one-byte segments.
    /// </summary>
    public static IEnumerable<Delivery> All(byte[] input)
    {
        yield return Whole(input);
        for (var p = 1; p < input.Length; p++)
        {
            yield return new Delivery($"two reads split at {p}", [[input[..p]], [input[p..]]]);
            yield return new Delivery($"two segments split at {p}", [[input[..p], input[p..]]]);
        }

        yield return new Delivery("one byte per read", input.Select(b => (IReadOnlyList<byte[]>)[[b]]).ToList());
        yield return new Delivery("one byte per segment", [input.Select(b => new[] { b }).ToList()]);
    }

    /// <summary>Fixed-size reads.</summary>
    public static Delivery InChunksOf(byte[] input, int size) =>
        new($"reads of {size}", input.Chunk(size).Select(c => (IReadOnlyList<byte[]>)[c]).ToList());

    /// <summary>Renders bytes for assertion messages: printable ASCII as is, everything else escaped.</summary>
    public static string Escape(ReadOnlySpan<byte> bytes)
    {
        var builder = new StringBuilder(bytes.Length);
        foreach (var b in bytes)
        {
            switch (b)
            {
                case (byte)'\r':
                    builder.Append("\\r");
                    break;
                case (byte)'\n':
                    builder.Append("\\n");
                    break;
                case (byte)'\\':
                    builder.Append("\\\\");
                    break;
                case (byte)'"':
                    builder.Append("\\\"");
                    break;
                case < 0x20 or >= 0x7F:
                    builder.Append("\\x").Append(b.ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
                    break;
                default:
                    builder.Append((char)b);
                    break;
            }
        }

        return builder.ToString();
    }
}
