using System.Text.Json.Nodes;
using Xunit;

namespace ImapProxy.Tests.Delivery;

/// <summary>
/// The Grafana dashboard ships twice: deploy/grafana/imapproxy-dashboard.json (the source) and the chart's copy
/// helm/imapproxy/dashboards/imapproxy-dashboard.json (Helm reads files only inside the chart). They must be equal.
/// </summary>
public class DashboardTests
{
    private static string ChartCopy => Repository.Path("helm", "imapproxy", "dashboards", "imapproxy-dashboard.json");

    private static string Source => Repository.Path("deploy", "grafana", "imapproxy-dashboard.json");

    [Fact]
    public void ChartCopy_IsTheDeployDashboard()
    {
        // Until deploy/grafana has the dashboard, the chart carries a minimal one of its own.
        if (File.Exists(Source))
        {
            Assert.True(
                File.ReadAllBytes(Source).AsSpan().SequenceEqual(File.ReadAllBytes(ChartCopy)),
                "helm/imapproxy/dashboards/imapproxy-dashboard.json differs from deploy/grafana/imapproxy-dashboard.json: copy it over");
        }

        var dashboard = JsonNode.Parse(File.ReadAllText(ChartCopy))!.AsObject();
        Assert.False(string.IsNullOrWhiteSpace((string?)dashboard["title"]));
        Assert.False(string.IsNullOrWhiteSpace((string?)dashboard["uid"]));
        Assert.NotEmpty(dashboard["panels"]!.AsArray());
    }

    [Fact]
    public async Task DashboardConfigMap_CarriesTheFile_ForTheGrafanaSidecar()
    {
        var chart = await Helm.TemplateAsync(HelmChartTests.Arguments("full"));
        var configMap = chart.Get("ConfigMap", chart.FullName + "-dashboard");

        Assert.Equal("1", (string?)configMap.Metadata["labels"]!["grafana_dashboard"]);
        Assert.Equal("Mail", (string?)configMap.Metadata["annotations"]!["grafana_folder"]);
        Assert.Equal(File.ReadAllText(ChartCopy).TrimEnd('\n'), ((string)configMap.Body["data"]!["imapproxy-dashboard.json"]!).TrimEnd('\n'));
        Assert.Null((await Helm.TemplateAsync()).Find("ConfigMap", chart.FullName + "-dashboard"));
    }
}
