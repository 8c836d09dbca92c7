using ImapProxy.Testing.Prometheus;
using Xunit.Abstractions;

namespace ImapProxy.FunctionalTests.Telemetry;

/// <summary>
/// A real Prometheus scrapes a proxy that has seen a known sequence of logins: its queries answer exactly those
/// counts. And the alert rules and the scrape configuration pass promtool.
/// </summary>
[Collection(TelemetryDefinition.Name)]
public sealed class PrometheusScrapeTests(TelemetryCluster cluster, ITestOutputHelper output) : IClassFixture<TelemetryCluster>
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task KnownLogins_AreCountedExactly_InPrometheus()
    {
        // Distinct users, so that every directory lookup is a first one (no placement cache hit).
        foreach (var (user, password) in new[] { ("quokka.vanderbilt", "quokka-pass"), ("zanzibar-omelette", "zanzibar-pass"), ("xylophone_kestrel", "xylophone-pass") })
        {
            Assert.StartsWith("a OK [CAPABILITY ", await cluster.LoginOnceAsync(user, password), StringComparison.Ordinal);
        }

        foreach (var user in new[] { "okapi.fandango", "pangolin.rhubarb" })
        {
            Assert.StartsWith("a NO [AUTHENTICATIONFAILED]", await cluster.LoginOnceAsync(user, "wrong-password"), StringComparison.Ordinal);
        }

        await cluster.Consul.PutKeyAsync("imapproxy/users/narwhal_sassafras", TelemetryCluster.DownBackend);
        Assert.StartsWith("a NO [UNAVAILABLE]", await cluster.LoginOnceAsync("narwhal_sassafras", "narwhal-pass"), StringComparison.Ordinal);

        await ExpectAsync(
            "sum by (imapproxy_login_result) (imapproxy_logins_total)",
            "imapproxy_login_result",
            new() { ["success"] = 3, ["auth_failed"] = 2, ["unavailable"] = 1 });
        await ExpectAsync(
            "sum by (imapproxy_login_mechanism) (imapproxy_logins_total)",
            "imapproxy_login_mechanism",
            new() { ["login"] = 6 });
        await ExpectAsync(
            "sum by (imapproxy_listener) (imapproxy_connections_accepted_total)",
            "imapproxy_listener",
            new() { ["imaps"] = 6 });
        // Five users without a placement are hashed; the placed one is read from Consul.
        await ExpectAsync(
            "sum by (imapproxy_directory_source) (imapproxy_directory_lookups_total)",
            "imapproxy_directory_source",
            new() { ["hash"] = 5, ["consul"] = 1 });
        // Every login looks up the directory and connects (the refused connect too); five reach a backend's
        // authentication; only the successes have a total.
        await ExpectAsync(
            "sum by (imapproxy_login_phase) (imapproxy_login_duration_seconds_count)",
            "imapproxy_login_phase",
            new() { ["directory"] = 6, ["backend_connect"] = 6, ["backend_auth"] = 5, ["total"] = 3 });
        await ExpectAsync(
            "sum by (imapproxy_backend) (imapproxy_backend_connect_errors_total)",
            "imapproxy_backend",
            new() { [TelemetryCluster.DownBackend] = 1 });
        await ExpectAsync("sum(imapproxy_auth_failure_delay_seconds_count)", "", new() { [""] = 2 });
        await ExpectAsync("sum(imapproxy_session_duration_seconds_count)", "", new() { [""] = 3 });
        // Everything was logged out: the up/down counters are balanced again.
        await ExpectAsync("sum(imapproxy_connections_active)", "", new() { [""] = 0 });
        await ExpectAsync("sum(imapproxy_backend_sessions_active)", "", new() { [""] = 0 });

        var bytes = await cluster.Prometheus.WaitForQueryAsync(
            "sum by (imapproxy_direction) (imapproxy_transferred_bytes_total)",
            samples => samples.Count == 2 && samples.All(s => s.Value > 0),
            s_timeout);
        output.WriteLine("sum by (imapproxy_direction) (imapproxy_transferred_bytes_total):\n  " + string.Join("\n  ", bytes));
        Assert.Equal(["backend_to_client", "client_to_backend"], bytes.Select(s => s["imapproxy_direction"]).Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task AlertRules_AndTheirUnitTests_PassPromtool()
    {
        var check = await Promtool.CheckRulesAsync(TelemetryCluster.AlertRulesPath);
        output.WriteLine(check.Output);
        Assert.True(check.Succeeded, check.Output);
        Assert.Contains("SUCCESS: 9 rules found", check.Output, StringComparison.Ordinal);

        var unitTests = await Promtool.TestRulesAsync(Path.Combine(Path.GetDirectoryName(TelemetryCluster.AlertRulesPath)!, "imapproxy-alerts-tests.yml"));
        output.WriteLine(unitTests.Output);
        Assert.True(unitTests.Succeeded, unitTests.Output);
    }

    [Fact]
    public async Task ScrapeConfiguration_PassesPromtool_AndTheServerLoadedTheRules()
    {
        // The generated configuration names the rule file, so this checks both as Prometheus loads them.
        var check = await Promtool.CheckConfigAsync(cluster.Prometheus.ConfigPath);
        output.WriteLine(check.Output);
        Assert.True(check.Succeeded, check.Output);

        var rules = await cluster.Prometheus.RulesAsync();
        Assert.Equal(9, rules.Count);
        Assert.All(rules, rule => Assert.Equal("alerting", rule.Type));
    }

    private async Task ExpectAsync(string promQl, string label, Dictionary<string, double> expected)
    {
        IReadOnlyList<PrometheusSample> samples;
        try
        {
            samples = await cluster.Prometheus.WaitForValuesAsync(promQl, label, expected, s_timeout);
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException($"{ex.Message}\nThe proxy's /metrics now:\n{await cluster.ScrapeAsync()}", ex);
        }

        output.WriteLine($"{promQl}:\n  {string.Join("\n  ", samples)}");
    }
}
