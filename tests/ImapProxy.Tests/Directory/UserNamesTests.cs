using System.Text;
using ImapProxy.Configuration;
using ImapProxy.Directory;
using Xunit;

namespace ImapProxy.Tests.Directory;

public class UserNamesTests
{
    [Theory]
    [InlineData("  Alice@Example.ORG ", UserNormalization.Lowercase, "alice@example.org")]
    [InlineData("  Alice@Example.ORG ", UserNormalization.None, "Alice@Example.ORG")]
    [InlineData("J\u00d6RG", UserNormalization.Lowercase, "j\u00f6rg")]
    public void Normalize_TrimsAndLowercases(string raw, UserNormalization normalization, string expected)
    {
        Assert.Equal(expected, UserNames.Normalize(Encoding.UTF8.GetBytes(raw), normalization));
    }

    [Fact]
    public void Normalize_InvalidUtf8_DoesNotThrow()
    {
        Assert.Equal("a\ufffdb", UserNames.Normalize([(byte)'a', 0xFF, (byte)'b'], UserNormalization.Lowercase));
    }

    [Theory]
    [InlineData("alice", "alice")]
    [InlineData("evil\r\nfake log line", "evil\\r\\nfake log line")]
    [InlineData("back\\slash", "back\\\\slash")]
    [InlineData("bell\u0007", "bell\\u0007")]
    public void ForLog_EscapesControlCharacters(string user, string expected)
    {
        Assert.Equal(expected, UserNames.ForLog(user));
    }

    [Fact]
    public void ForLog_CutsLongNames()
    {
        var logged = UserNames.ForLog(new string('a', 1000));
        Assert.True(logged.Length <= 130);
        Assert.EndsWith("…", logged, StringComparison.Ordinal);
    }
}
