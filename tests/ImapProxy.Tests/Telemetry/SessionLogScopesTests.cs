using ImapProxy.Telemetry;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Xunit;

namespace ImapProxy.Tests.Telemetry;

/// <summary>
/// Whether sessions open their log scope, from the logging configuration as the host binds it (console logger and
/// its formatters, configured from an in-memory "Logging" section).
/// </summary>
public sealed class SessionLogScopesTests
{
    [Theory]
    [InlineData(null, null, false)] // the default: the simple formatter, no scopes
    [InlineData(null, "true", true)]
    [InlineData("simple", "false", false)]
    [InlineData("simple", "true", true)]
    [InlineData("json", null, false)]
    [InlineData("json", "true", true)]
    [InlineData("systemd", "true", true)]
    [InlineData("someone-elses", null, true)] // a formatter of unknown habits may print scopes: kept
    public void FollowsWhetherTheConsolePrintsScopes(string? formatter, string? includeScopes, bool expected)
    {
        var settings = new Dictionary<string, string?>
        {
            ["Logging:Console:FormatterName"] = formatter,
            ["Logging:Console:FormatterOptions:IncludeScopes"] = includeScopes,
        };

        Assert.Equal(expected, Enabled(settings));
    }

    [Fact]
    public void TheConsolesOwnObsoleteSetting_StillCounts_WhenNoFormatterIsNamed()
    {
        var settings = new Dictionary<string, string?> { ["Logging:Console:IncludeScopes"] = "true" };

        Assert.True(Enabled(settings));
    }

    private static bool Enabled(Dictionary<string, string?> settings)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings).Build();
        var services = new ServiceCollection();
        services.AddLogging(logging => logging.AddConfiguration(configuration.GetSection("Logging")).AddConsole());
        services.AddSingleton<SessionLogScopes>();
        using var provider = services.BuildServiceProvider();
        return provider.GetRequiredService<SessionLogScopes>().Enabled;
    }
}
