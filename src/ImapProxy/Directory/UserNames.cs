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

    /// <summary>
    /// A user name as it may appear in a log line: control characters are escaped, so a name carrying CR or LF
    /// cannot forge log lines; long names are cut.
    /// </summary>
    public static string ForLog(string user, UserNameLogging mode) => mode switch
    {
        UserNameLogging.Omitted => "-",
        UserNameLogging.Hashed => Pseudonym(user),
        _ => ForLog(user),
    };

    /// <summary>A stable pseudonym: the same user always gives the same 16 hex digits, the name cannot be read back.</summary>
    public static string Pseudonym(string user)
    {
        ArgumentNullException.ThrowIfNull(user);
        Span<byte> hash = stackalloc byte[32];
        System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(user), hash);
        return "h:" + Convert.ToHexStringLower(hash[..8]);
    }

    public static string ForLog(string user)
    {
        ArgumentNullException.ThrowIfNull(user);
        const int MaxLength = 128;
        var needsEscaping = false;
        foreach (var c in user)
        {
            if (char.IsControl(c) || c == '\\')
            {
                needsEscaping = true;
                break;
            }
        }

        if (!needsEscaping && user.Length <= MaxLength)
        {
            return user;
        }

        var builder = new StringBuilder(Math.Min(user.Length, MaxLength) + 8);
        foreach (var c in user)
        {
            if (builder.Length >= MaxLength)
            {
                builder.Append('…');
                break;
            }

            switch (c)
            {
                case '\r':
                    builder.Append("\\r");
                    break;
                case '\n':
                    builder.Append("\\n");
                    break;
                case '\\':
                    builder.Append("\\\\");
                    break;
                default:
                    if (char.IsControl(c))
                    {
                        builder.Append("\\u").Append(((int)c).ToString("x4", System.Globalization.CultureInfo.InvariantCulture));
                    }
                    else
                    {
                        builder.Append(c);
                    }

                    break;
            }
        }

        return builder.ToString();
    }
}
