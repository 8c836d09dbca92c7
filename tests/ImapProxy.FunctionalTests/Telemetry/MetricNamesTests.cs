using System.Diagnostics;
using ImapProxy.FunctionalTests.Consul;
using ImapProxy.Testing.Prometheus;
using ImapProxy.Testing.Raw;
using Xunit.Abstractions;

namespace ImapProxy.FunctionalTests.Telemetry;

/// <summary>
/// The dashboard, the alert rules and docs/telemetry.md against a real scrape, after everything that makes a
/// series appear has happened: every metric and label they name exists, every dashboard query runs, every rule
/// evaluates, every exported family is documented, and no user name is ever a label value.
/// </summary>
[Collection(TelemetryDefinition.Name)]
public sealed class MetricNamesTests(TelemetryCluster cluster, ITestOutputHelper output) : IClassFixture<TelemetryCluster>
{
    private static readonly TimeSpan s_prometheusTimeout = TimeSpan.FromSeconds(30);

    private static string DashboardPath => Path.Combine(TelemetryCluster.RepositoryRoot, "deploy", "grafana", "imapproxy-dashboard.json");

    private static string TelemetryDocPath => Path.Combine(TelemetryCluster.RepositoryRoot, "docs", "telemetry.md");

    [Fact]
    public async Task DashboardAndAlertRules_UseOnlyMetricsAndLabelsOfARealScrape()
    {
        await ExerciseEverythingAsync();
        var scrape = await cluster.ScrapeAsync();
        var samples = PromQl.ScrapeSampleNames(scrape);
        var families = PromQl.ScrapeFamilies(scrape);
        var scrapeLabels = PromQl.ScrapeLabelNames(scrape);

        var dashboard = await File.ReadAllTextAsync(DashboardPath);
        var rules = await File.ReadAllTextAsync(TelemetryCluster.AlertRulesPath);
        var uses = PromQl.DashboardExpressions(dashboard).Select(e => ("dashboard", e))
            .Concat(PromQl.RuleExpressions(rules).Select(e => ("alert rules", e)))
            .ToList();
        Assert.True(uses.Count > 20, $"Only {uses.Count} expressions found: is the parsing of the files broken?");

        var missing = new List<string>();
        var used = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var (file, expression) in uses)
        {
            foreach (var name in PromQl.MetricNames(expression))
            {
                used.Add(name);
                if (!samples.Contains(name) && !IsHistogramSeries(name, families))
                {
                    missing.Add($"{file}: metric {name} in: {expression}");
                }
            }

            foreach (var label in PromQl.LabelNames(expression))
            {
                if (!scrapeLabels.Contains(label) && !PromQl.ImplicitLabels.Contains(label))
                {
                    missing.Add($"{file}: label {label} in: {expression}");
                }
            }
        }

        foreach (var label in PromQl.DashboardLegendLabels(dashboard))
        {
            if (!scrapeLabels.Contains(label) && !PromQl.ImplicitLabels.Contains(label))
            {
                missing.Add($"dashboard: legend label {{{{{label}}}}}");
            }
        }

        output.WriteLine($"Metrics used by the dashboard and the rules ({used.Count}):\n  {string.Join("\n  ", used)}");
        Assert.True(missing.Count == 0, $"Not in a real scrape:\n{string.Join('\n', missing)}\n\nScrape:\n{scrape}");

        // What Prometheus stored is what the queries see: the same names, whatever exposition format it chose.
        var stored = await WaitForStoredNamesAsync(used);
        var notStored = used.Where(name => !stored.Contains(name)).ToList();
        Assert.True(notStored.Count == 0, $"Not stored by Prometheus: {string.Join(", ", notStored)}");
    }

    [Fact]
    public async Task EveryDashboardQuery_RunsInPrometheus_AndEveryRuleEvaluates()
    {
        await ExerciseEverythingAsync();
        await WaitForStoredNamesAsync(PromQl.ScrapeSampleNames(await cluster.ScrapeAsync()).Where(n => n.StartsWith("imapproxy_", StringComparison.Ordinal)));

        var dashboard = await File.ReadAllTextAsync(DashboardPath);
        var failures = new List<string>();
        var empty = new List<string>();
        foreach (var expression in PromQl.DashboardExpressions(dashboard).Select(PromQl.Substitute))
        {
            try
            {
                if ((await cluster.Prometheus.QueryAsync(expression)).Count == 0)
                {
                    empty.Add(expression);
                }
            }
            catch (InvalidOperationException ex)
            {
                failures.Add(ex.Message);
            }
        }

        Assert.True(failures.Count == 0, string.Join('\n', failures));
        output.WriteLine($"Dashboard queries with no data right now (allowed):\n  {string.Join("\n  ", empty)}");

        // Evaluated at least once with the exercised series present: runtime errors (many-to-many matches,
        // bad templates) show only then.
        var (rules, evaluated) = await PrometheusServer.PollAsync(
            ct => cluster.Prometheus.RulesAsync(ct),
            r => r.Count > 0 && r.All(rule => rule.Health != "unknown"),
            s_prometheusTimeout);
        Assert.True(evaluated, $"Rules not evaluated within {s_prometheusTimeout}: {string.Join(", ", rules)}");

        Assert.Equal(9, rules.Count);
        Assert.All(rules, rule => Assert.True(rule.Health == "ok", $"{rule.Name}: {rule.Health} {rule.LastError}"));
    }

    [Fact]
    public async Task EveryExportedFamily_IsInTheTelemetryDoc()
    {
        await ExerciseEverythingAsync();
        var families = PromQl.ScrapeFamilies(await cluster.ScrapeAsync());
        var doc = await File.ReadAllTextAsync(TelemetryDocPath);
        var undocumented = families.Keys
            .Where(name => name.StartsWith("imapproxy_", StringComparison.Ordinal))
            .Select(name => families[name] == "counter" && !name.EndsWith("_total", StringComparison.Ordinal) ? name + "_total" : name)
            .Where(name => !doc.Contains($"`{name}`", StringComparison.Ordinal))
            .ToList();
        Assert.True(undocumented.Count == 0, $"Not in docs/telemetry.md: {string.Join(", ", undocumented)}");
    }

    [Fact]
    public async Task NoUserName_IsALabelValue()
    {
        await ExerciseEverythingAsync();
        foreach (var user in TelemetryCluster.Users.Take(5))
        {
            Assert.StartsWith("a OK", await cluster.LoginOnceAsync(user.Name, user.Password), StringComparison.Ordinal);
        }

        foreach (var user in TelemetryCluster.Users.Skip(5))
        {
            Assert.StartsWith("a NO", await cluster.LoginOnceAsync(user.Name, "not-" + user.Password), StringComparison.Ordinal);
        }

        Assert.StartsWith("a NO", await cluster.LoginOnceAsync("ghost.huckleberry", "whatever"), StringComparison.Ordinal);
        await cluster.Consul.PutKeyAsync("imapproxy/users/capybara.tamarind", "dovecot-2");
        Assert.StartsWith("a OK", await cluster.LoginOnceAsync("capybara.tamarind", "capybara-pass"), StringComparison.Ordinal);

        var names = TelemetryCluster.Users.Select(u => u.Name).Append("ghost.huckleberry").ToList();
        // The distinctive part alone too: a label could hold a normalised or truncated name.
        var needles = names.Concat(names.Select(n => n.Split('.', '-', '_', '@')[0])).ToList();
        var scrape = await cluster.ScrapeAsync();
        var values = PromQl.ScrapeLabelValues(scrape);
        Assert.NotEmpty(values);
        var inScrape = needles.Where(needle => scrape.Contains(needle, StringComparison.OrdinalIgnoreCase)).ToList();
        Assert.True(inScrape.Count == 0, $"User names in /metrics: {string.Join(", ", inScrape)}");

        // And in what Prometheus stored (every series of the proxy, all labels, target labels included).
        var series = await cluster.Prometheus.QueryAsync("{__name__=~\"imapproxy_.+|target_info\"}");
        Assert.NotEmpty(series);
        var inPrometheus = series.SelectMany(s => s.Labels.Values).Where(v => needles.Any(n => v.Contains(n, StringComparison.OrdinalIgnoreCase))).ToList();
        Assert.True(inPrometheus.Count == 0, $"User names in Prometheus: {string.Join(", ", inPrometheus)}");
    }

    private static bool IsHistogramSeries(string name, Dictionary<string, string> families) =>
        new[] { "_bucket", "_sum", "_count" }.Any(suffix =>
            name.EndsWith(suffix, StringComparison.Ordinal) &&
            families.TryGetValue(name[..^suffix.Length], out var kind) && kind == "histogram");

    private async Task<IReadOnlySet<string>> WaitForStoredNamesAsync(IEnumerable<string> names)
    {
        var wanted = names.ToList();
        // On a timeout the caller's assertion names what is missing.
        var (stored, _) = await PrometheusServer.PollAsync(ct => cluster.Prometheus.MetricNamesAsync(ct), n => wanted.All(n.Contains), s_prometheusTimeout);
        return stored;
    }

    /// <summary>
    /// Once per class: logins of each result, each directory source, a backend connect error, a failed STARTTLS
    /// handshake, spliced sessions with bytes both ways, and a kick.
    /// </summary>
    private Task ExerciseEverythingAsync() => cluster.OnceAsync("exercise", async () =>
    {
        // Hashed (directory source "hash"), spliced, logged out: bytes both ways and a session duration.
        Assert.StartsWith("a OK", await cluster.LoginOnceAsync("quokka.vanderbilt", "quokka-pass"), StringComparison.Ordinal);

        // Placed: read from Consul, then from the placement cache.
        await cluster.Consul.PutKeyAsync("imapproxy/users/okapi.fandango", "dovecot-1");
        Assert.StartsWith("a OK", await cluster.LoginOnceAsync("okapi.fandango", "okapi-pass"), StringComparison.Ordinal);
        Assert.StartsWith("a OK", await cluster.LoginOnceAsync("okapi.fandango", "okapi-pass"), StringComparison.Ordinal);

        // A wrong password: auth_failed, after the throttling delay.
        Assert.StartsWith("a NO [AUTHENTICATIONFAILED]", await cluster.LoginOnceAsync("zanzibar-omelette", "wrong"), StringComparison.Ordinal);

        // Placed on the backend nobody listens for: refused at connect, unavailable.
        await cluster.Consul.PutKeyAsync("imapproxy/users/wombat-tiramisu", TelemetryCluster.DownBackend);
        Assert.StartsWith("a NO [UNAVAILABLE]", await cluster.LoginOnceAsync("wombat-tiramisu", "wombat-pass"), StringComparison.Ordinal);

        await FailStartTlsAsync();
        await KickAsync("narwhal_sassafras", "narwhal-pass");
    });

    /// <summary>STARTTLS, then bytes that are no TLS ClientHello: the handshake fails and the proxy closes.</summary>
    private async Task FailStartTlsAsync()
    {
        var skip = cluster.Proxy.Logs.Count;
        await using var client = await RawImapClient.ConnectAsync(cluster.Proxy.Imap);
        Assert.StartsWith("* OK", await client.ReadLineAsync(), StringComparison.Ordinal);
        Assert.StartsWith("a OK", (await client.CommandAsync("a", "STARTTLS"))[^1], StringComparison.Ordinal);
        await client.SendAsync("this is not a TLS ClientHello\r\n\r\n");
        Assert.True(await client.WaitForCloseAsync(TimeSpan.FromSeconds(20)));
        await cluster.Proxy.Logs.WaitForAsync(l => l.Contains("reason=tls handshake failed", StringComparison.Ordinal), TimeSpan.FromSeconds(10), skip);
    }

    /// <summary>A live IDLE session whose backend is disabled through Consul: kicked (backend_disabled).</summary>
    private async Task KickAsync(string user, string password)
    {
        var home = ConsulCluster.HashedId(user, "dovecot-1", "dovecot-2");
        var other = home == "dovecot-1" ? "dovecot-2" : "dovecot-1";
        var skip = cluster.Proxy.Logs.Count;
        var (client, answer) = await cluster.LoginAsync(user, password);
        await using (client)
        {
            Assert.StartsWith("a OK", answer, StringComparison.Ordinal);
            await client.CommandAsync("b", "SELECT INBOX");
            await client.SendAsync("c IDLE\r\n");
            Assert.StartsWith("+ ", await client.ReadLineAsync(), StringComparison.Ordinal);
            await cluster.Consul.PutKeyAsync($"imapproxy/backends/{home}", "disabled");
            try
            {
                await cluster.WaitForCandidatesAsync(other, skip);
                Assert.True(await client.WaitForCloseAsync(TimeSpan.FromSeconds(20)));
            }
            finally
            {
                skip = cluster.Proxy.Logs.Count;
                await cluster.Consul.DeleteKeyAsync($"imapproxy/backends/{home}");
                await cluster.WaitForCandidatesAsync("dovecot-1,dovecot-2", skip);
            }
        }

        await cluster.Proxy.Logs.WaitForAsync(l => l.Contains("reason=kicked: backend disabled", StringComparison.Ordinal), TimeSpan.FromSeconds(10));
    }
}
