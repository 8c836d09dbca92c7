namespace ImapProxy.Directory.Consul;

/// <summary>
/// The rules of Consul blocking queries (api-docs/features/blocking) for the index sent with the next request.
/// </summary>
public static class BlockingIndex
{
    /// <summary>
    /// The index to send next: if the returned index went backwards (a snapshot restore, a new leader with an
    /// older state) start over from 0, which answers at once; never block on 0 (an index below 1 is sent as 1,
    /// else an empty result would return immediately forever).
    /// </summary>
    public static ulong Next(ulong previous, ulong returned)
    {
        if (returned < previous)
        {
            return 0;
        }

        return returned < 1 ? 1 : returned;
    }

    /// <summary>True when the result may differ from the last one seen (an unchanged index means a timeout).</summary>
    public static bool Changed(ulong previous, ulong returned) => returned != previous || previous == 0;
}
