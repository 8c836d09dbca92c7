using System.Text;
using ImapProxy.Configuration;

namespace ImapProxy.Directory;

/// <summary>The one normalisation of user names used for placement, hashing, throttling and logs.</summary>
public static class UserNames
{
    /// <summary>Decodes UTF-8 (invalid bytes become U+FFFD), trims, and lower-cases if configured.</summary>
    public static string Normalize(ReadOnlySpan<byte> user, UserNormalization normalization)
    {
        var text = Encoding.UTF8.GetString(user).Trim();
        return normalization == UserNormalization.Lowercase ? text.ToLowerInvariant() : text;
    }
}
