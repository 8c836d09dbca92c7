using System.IO.Hashing;
using System.Text;
using ImapProxy.Backends;

namespace ImapProxy.Directory;

/// <summary>
/// Weighted rendezvous (highest random weight) hashing. Each backend scores a user with
/// <c>-weight / ln(u)</c>, u a uniform (0,1) value from a 64-bit hash of (backend, user); the highest score
/// wins. Removing a backend moves only its own users; adding one takes a weight-proportional share from every
/// other. The same inputs give the same answer on every replica.
/// </summary>
public static class RendezvousHash
{
    private const double TwoPow53 = 9007199254740992.0;

    /// <summary>The chosen backend, or null when there is none.</summary>
    public static BackendEndpoint? Pick(string user, IReadOnlyList<BackendEndpoint> backends)
    {
        ArgumentNullException.ThrowIfNull(user);
        ArgumentNullException.ThrowIfNull(backends);
        if (backends.Count == 0)
        {
            return null;
        }

        Span<byte> stackBuffer = stackalloc byte[256];
        var maxBytes = Encoding.UTF8.GetMaxByteCount(user.Length);
        var buffer = maxBytes <= stackBuffer.Length ? stackBuffer : new byte[maxBytes];
        var key = buffer[..Encoding.UTF8.GetBytes(user, buffer)];

        BackendEndpoint? best = null;
        var bestScore = double.NegativeInfinity;
        foreach (var backend in backends)
        {
            var score = Score(key, backend);
            // Ties (vanishingly rare) are broken by id so the choice never depends on list order.
            if (score > bestScore || (score == bestScore && best is not null && string.CompareOrdinal(backend.Id, best.Id) < 0))
            {
                best = backend;
                bestScore = score;
            }
        }

        return best;
    }

    internal static double Score(ReadOnlySpan<byte> user, BackendEndpoint backend)
    {
        var hash = XxHash3.HashToUInt64(user, backend.HashSeed);
        // 53 random bits, offset by half a step so u is never 0 or 1.
        var u = ((hash >> 11) + 0.5) / TwoPow53;
        return -backend.Weight / Math.Log(u);
    }
}
