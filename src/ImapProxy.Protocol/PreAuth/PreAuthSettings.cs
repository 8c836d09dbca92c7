using System.Text;
using ImapProxy.Protocol.Parsing;

namespace ImapProxy.Protocol.PreAuth;

/// <summary>
/// Everything the pre-authentication dialogue needs that does not change per connection. Capability lines are
/// rendered once per state combination.
/// </summary>
public sealed class PreAuthSettings
{
    private readonly byte[][] _capabilities = new byte[8][];

    public PreAuthSettings(
        ImapParserLimits limits,
        string greetingText,
        int errorBudget,
        IEnumerable<string> extraCapabilities,
        bool advertiseImap4Rev2,
        string productName,
        string productVersion)
    {
        ArgumentNullException.ThrowIfNull(limits);
        ArgumentException.ThrowIfNullOrWhiteSpace(greetingText);
        ArgumentNullException.ThrowIfNull(extraCapabilities);
        Limits = limits;
        GreetingText = Encoding.ASCII.GetBytes(greetingText);
        ErrorBudget = errorBudget;

        var extras = extraCapabilities.Where(c => !string.IsNullOrWhiteSpace(c)).ToArray();
        for (var i = 0; i < _capabilities.Length; i++)
        {
            var startTls = (i & 1) != 0;
            var plaintextAllowed = (i & 2) != 0;
            var builder = new StringBuilder("IMAP4rev1");
            if (advertiseImap4Rev2)
            {
                builder.Append(" IMAP4rev2");
            }

            // LITERAL+ (never LITERAL- with it), SASL-IR, ID; ENABLE and IDLE so that clients that only look
            // before login still see what every supported backend has.
            builder.Append(" SASL-IR LITERAL+ ID ENABLE IDLE");
            foreach (var extra in extras)
            {
                builder.Append(' ').Append(extra.Trim());
            }

            if (startTls)
            {
                builder.Append(" STARTTLS");
            }

            builder.Append(plaintextAllowed ? " AUTH=PLAIN AUTH=LOGIN" : " LOGINDISABLED");
            _capabilities[i] = Encoding.ASCII.GetBytes(builder.ToString());
        }

        IdResponse = Encoding.ASCII.GetBytes($"ID (\"name\" \"{productName}\" \"version\" \"{productVersion}\")");
    }

    public ImapParserLimits Limits { get; }

    public byte[] GreetingText { get; }

    /// <summary>BAD responses tolerated before "* BYE" and close.</summary>
    public int ErrorBudget { get; }

    /// <summary>"ID (...)" without the leading "* ".</summary>
    public byte[] IdResponse { get; }

    /// <summary>The capability list (no "CAPABILITY" keyword) for the connection's state.</summary>
    public ReadOnlySpan<byte> Capabilities(bool startTlsAvailable, bool plaintextAllowed) =>
        _capabilities[(startTlsAvailable ? 1 : 0) | (plaintextAllowed ? 2 : 0)];
}
