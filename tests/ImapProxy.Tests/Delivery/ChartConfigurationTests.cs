using System.Collections;
using System.Reflection;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using ImapProxy.Configuration;
using Xunit;

namespace ImapProxy.Tests.Delivery;

/// <summary>
/// The configuration file the chart renders (ConfigMap) plus the container's ImapProxy__ environment, loaded by the
/// proxy's own start-up code: it must be accepted, name only keys the proxy has and documents, reference files
/// only inside the pod's mounts, and keep the proxy's defaults wherever the chart has no reason to differ.
/// </summary>
public partial class ChartConfigurationTests
{
    private const string PodIp = "10.1.2.3";

    public static TheoryData<string> ValuesFiles => HelmChartTests.ValuesFiles;

    [Theory]
    [MemberData(nameof(ValuesFiles))]
    public async Task RenderedConfiguration_IsAcceptedByTheProxy(string values)
    {
        var chart = await Helm.TemplateAsync(HelmChartTests.Arguments(values));

        var loaded = await ProxyConfigurationLoader.LoadAsync(chart.ConfigurationJson, chart.ConfigurationEnvironment(PodIp));

        Assert.Empty(loaded.Failures);
        Assert.NotNull(loaded.Options);
        Assert.Equal(["imap", "imaps"], loaded.Options.Listeners.Select(l => l.Name));
        Assert.Equal([ListenerTls.StartTls, ListenerTls.Implicit], loaded.Options.Listeners.Select(l => l.Tls));
        Assert.True(loaded.Options.Admin.Enabled);
    }

    /// <summary>What the schema cannot see (a cross-field limit) the proxy refuses, and the loader reports it.</summary>
    [Fact]
    public async Task RenderedConfiguration_TheProxyRefuses_IsReportedWithTheKey()
    {
        var chart = await Helm.TemplateAsync("--set", "preAuth.maxCommandSize=2048");

        var loaded = await ProxyConfigurationLoader.LoadAsync(chart.ConfigurationJson, chart.ConfigurationEnvironment(PodIp));

        Assert.Null(loaded.Options);
        Assert.Contains(loaded.Failures, f => f.StartsWith("ImapProxy:PreAuth:MaxCommandSize", StringComparison.Ordinal));
    }

    [Fact]
    public async Task FullValues_ProxySeesConsulTokenAndRegistrationFromTheEnvironment()
    {
        var chart = await Helm.TemplateAsync(HelmChartTests.Arguments("full"));

        var loaded = await ProxyConfigurationLoader.LoadAsync(chart.ConfigurationJson, chart.ConfigurationEnvironment(PodIp));

        var consul = loaded.Options!.Consul;
        Assert.True(consul.Enabled);
        Assert.Equal(["http://consul-server.consul.svc:8500", "http://consul-server-1.consul.svc:8500"], consul.Addresses);
        Assert.Equal("secret:imapproxy-consul-acl/acl-token", consul.Token);
        Assert.Equal("mail/imapproxy", consul.KeyPrefix);
        Assert.True(consul.Registration.Enabled);
        Assert.Equal(PodIp, consul.Registration.Address);
        Assert.Equal($"http://{PodIp}:8080/readyz", consul.Registration.CheckUrl);
        Assert.Empty(loaded.Options.Backends.Static);
        Assert.Equal(TimeSpan.FromMinutes(2), loaded.Options.Session.ShutdownGrace);
        Assert.Equal("http://otel-collector.observability.svc:4317", loaded.Options.Telemetry.OtlpEndpoint);
    }

    [Theory]
    [MemberData(nameof(ValuesFiles))]
    public async Task RenderedConfiguration_FilesLieInsideTheContainersMounts(string values)
    {
        var chart = await Helm.TemplateAsync(HelmChartTests.Arguments(values));
        var mounts = chart.Container["volumeMounts"]!.AsArray().Select(m => (string)m!["mountPath"]! + "/").ToList();

        var loaded = await ProxyConfigurationLoader.LoadAsync(chart.ConfigurationJson, chart.ConfigurationEnvironment(PodIp));

        Assert.Contains(loaded.Files, f => f.Key == "ImapProxy:Tls:CertificateFile");
        Assert.All(loaded.Files, file => Assert.True(
            mounts.Any(mount => file.Path.StartsWith(mount, StringComparison.Ordinal)),
            $"{file.Key} = {file.Path} is not under a volume mount ({string.Join(", ", mounts)})"));
        if (values == "full")
        {
            Assert.Equal(
                ["ImapProxy:Backends:CaFile", "ImapProxy:Backends:MasterPasswordFile", "ImapProxy:Tls:CertificateFile", "ImapProxy:Tls:KeyFile", "ImapProxy:Tls:SessionTicketKeyFile"],
                loaded.Files.Select(f => f.Key).Order(StringComparer.Ordinal));
        }
    }

    [Theory]
    [MemberData(nameof(ValuesFiles))]
    public async Task RenderedConfiguration_NamesOnlyKeysOfTheProxysOptions(string values)
    {
        var chart = await Helm.TemplateAsync(HelmChartTests.Arguments(values));

        var unknown = new List<string>();
        FindUnknownKeys(chart.Configuration["ImapProxy"]!.AsObject(), typeof(ImapProxyOptions), "ImapProxy", unknown);

        Assert.Empty(unknown);
    }

    [Theory]
    [MemberData(nameof(ValuesFiles))]
    public async Task RenderedConfiguration_NamesOnlyKeysTheReadmeDocuments(string values)
    {
        var chart = await Helm.TemplateAsync(HelmChartTests.Arguments(values));
        var documented = DocumentedKeys();

        var rendered = new List<string>();
        CollectKeys(chart.Configuration["ImapProxy"], "ImapProxy", rendered);

        Assert.True(documented.Count > 50, "README.md's configuration table was not found");
        Assert.DoesNotContain(rendered, key => !documented.Contains(key));
    }

    /// <summary>values.yaml restates the proxy's defaults; they must not drift from ImapProxyOptions.</summary>
    [Fact]
    public async Task ChartDefaults_AreTheProxysDefaults()
    {
        // With Consul on, so that its section is rendered too (the static placeholder backend is then left out).
        var chart = await Helm.TemplateAsync("--set", "consul.enabled=true", "--set", "consul.addresses[0]=http://consul:8500");
        var loaded = await ProxyConfigurationLoader.LoadAsync(chart.ConfigurationJson, chart.ConfigurationEnvironment(PodIp));
        Assert.Empty(loaded.Failures);

        // Where the chart differs on purpose: pod networking and mounts, and the Consul switch itself.
        var deliberate = new HashSet<string>
        {
            "ImapProxy:Listeners",
            "ImapProxy:Admin:Address",
            "ImapProxy:Tls:CertificateFile",
            "ImapProxy:Tls:KeyFile",
            "ImapProxy:Consul:Enabled",
            "ImapProxy:Consul:Addresses",
        };
        var differences = new List<string>();
        CompareDefaults(new ImapProxyOptions(), loaded.Options!, "ImapProxy", deliberate, differences);

        Assert.Empty(differences);
    }

    private static void FindUnknownKeys(JsonObject section, Type type, string key, List<string> unknown)
    {
        foreach (var (name, value) in section)
        {
            var childKey = key + ":" + name;
            var property = type.GetProperty(name, BindingFlags.Public | BindingFlags.Instance | BindingFlags.IgnoreCase);
            if (property is null)
            {
                CollectKeys(value, childKey, unknown);
                continue;
            }

            var propertyType = property.PropertyType;
            if (value is JsonObject child)
            {
                FindUnknownKeys(child, propertyType, childKey, unknown);
            }
            else if (value is JsonArray array && propertyType.IsGenericType && propertyType.GetGenericTypeDefinition() == typeof(List<>))
            {
                var itemType = propertyType.GetGenericArguments()[0];
                foreach (var item in array.OfType<JsonObject>())
                {
                    FindUnknownKeys(item, itemType, childKey + ":N", unknown);
                }
            }
        }
    }

    /// <summary>Every leaf key, list indices written as N: ImapProxy:Listeners:N:Port.</summary>
    private static void CollectKeys(JsonNode? node, string key, List<string> keys)
    {
        switch (node)
        {
            case JsonObject obj:
                foreach (var (name, child) in obj)
                {
                    CollectKeys(child, key + ":" + name, keys);
                }

                break;
            case JsonArray array:
                if (array.Count == 0 || array.All(item => item is JsonValue))
                {
                    keys.Add(key + ":N");
                }
                else
                {
                    foreach (var item in array)
                    {
                        CollectKeys(item, key + ":N", keys);
                    }
                }

                break;
            default:
                keys.Add(key);
                break;
        }
    }

    /// <summary>
    /// The keys in README.md's configuration table, list indices (N, M) written as N. A row may name siblings:
    /// `ImapProxy:Consul:Token` / `TokenFile`.
    /// </summary>
    private static HashSet<string> DocumentedKeys()
    {
        var keys = new HashSet<string>(StringComparer.Ordinal);
        foreach (var line in File.ReadLines(Repository.Path("README.md")))
        {
            if (!line.StartsWith("| `ImapProxy:", StringComparison.Ordinal))
            {
                continue;
            }

            var cell = line.Split('|')[1];
            string? first = null;
            foreach (Match match in Backticked().Matches(cell))
            {
                var name = ListIndex().Replace(match.Groups[1].Value, ":N");
                if (first is null)
                {
                    first = name;
                    keys.Add(name);
                }
                else
                {
                    keys.Add(name.Contains(':', StringComparison.Ordinal) ? name : first[..(first.LastIndexOf(':') + 1)] + name);
                }
            }
        }

        return keys;
    }

    private static void CompareDefaults(object expected, object actual, string key, HashSet<string> deliberate, List<string> differences)
    {
        foreach (var property in expected.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.CanWrite))
        {
            var childKey = key + ":" + property.Name;
            if (deliberate.Contains(childKey))
            {
                continue;
            }

            var expectedValue = property.GetValue(expected);
            var actualValue = property.GetValue(actual);
            if (expectedValue is IList expectedList && actualValue is IList actualList)
            {
                if (!expectedList.Cast<object>().SequenceEqual(actualList.Cast<object>()))
                {
                    differences.Add($"{childKey}: proxy [{string.Join(", ", expectedList.Cast<object>())}], chart [{string.Join(", ", actualList.Cast<object>())}]");
                }
            }
            else if (expectedValue is not null && property.PropertyType.IsClass && property.PropertyType != typeof(string))
            {
                CompareDefaults(expectedValue, actualValue!, childKey, deliberate, differences);
            }
            else if (!Equals(expectedValue, actualValue))
            {
                differences.Add($"{childKey}: proxy {expectedValue ?? "(null)"}, chart {actualValue ?? "(null)"}");
            }
        }
    }

    [GeneratedRegex("`([^`]+)`")]
    private static partial Regex Backticked();

    [GeneratedRegex(":[A-Z](?=:|$)")]
    private static partial Regex ListIndex();
}
