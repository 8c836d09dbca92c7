using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace ImapProxy.Tests.Delivery;

/// <summary>One rendered Kubernetes object, as JSON (the YAML data model the API server sees).</summary>
internal sealed record Manifest(string ApiVersion, string Kind, string Name, JsonObject Body)
{
    public JsonObject Spec => Body["spec"]!.AsObject();

    public JsonObject Metadata => Body["metadata"]!.AsObject();

    public override string ToString() => $"{Kind}/{Name} ({ApiVersion})";
}

/// <summary>The output of <c>helm template</c>: every document, parsed, with lookups for the tests.</summary>
internal sealed partial class RenderedChart
{
    private RenderedChart(IReadOnlyList<Manifest> manifests) => Manifests = manifests;

    public IReadOnlyList<Manifest> Manifests { get; }

    public string FullName => Get("Deployment").Name;

    public Manifest Get(string kind, string? name = null)
    {
        var matches = Manifests.Where(m => m.Kind == kind && (name is null || m.Name == name)).ToList();
        return matches.Count == 1
            ? matches[0]
            : throw new InvalidOperationException($"Expected one {kind}{(name is null ? "" : "/" + name)}, found {matches.Count}: {string.Join(", ", Manifests)}");
    }

    public Manifest? Find(string kind, string name) => Manifests.SingleOrDefault(m => m.Kind == kind && m.Name == name);

    public JsonObject PodSpec => Get("Deployment").Spec["template"]!["spec"]!.AsObject();

    public JsonObject Container => PodSpec["containers"]!.AsArray().Single()!.AsObject();

    /// <summary>The proxy's configuration file from the chart's ConfigMap, as the proxy will read it.</summary>
    public string ConfigurationJson
    {
        get
        {
            var args = Container["args"]!.AsArray().Select(a => (string)a!).ToList();
            var path = args[args.IndexOf("--config") + 1];
            var mount = Container["volumeMounts"]!.AsArray()
                .Single(m => path.StartsWith((string)m!["mountPath"]! + "/", StringComparison.Ordinal))!;
            var volume = PodSpec["volumes"]!.AsArray().Single(v => (string)v!["name"]! == (string)mount["name"]!)!;
            var configMap = Get("ConfigMap", (string)volume["configMap"]!["name"]!);
            var key = path[((string)mount["mountPath"]!).Length..].TrimStart('/');
            return (string)configMap.Body["data"]![key]!;
        }
    }

    public JsonObject Configuration => JsonNode.Parse(ConfigurationJson)!.AsObject();

    /// <summary>
    /// The container's environment variables that are configuration keys (ImapProxy__Consul__Token becomes
    /// ImapProxy:Consul:Token), resolved as the kubelet would: $(VAR) expanded, the pod IP and Secret values
    /// given stand-ins.
    /// </summary>
    public IReadOnlyDictionary<string, string?> ConfigurationEnvironment(string podIp)
    {
        var resolved = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var variable in Container["env"]?.AsArray() ?? [])
        {
            var name = (string)variable!["name"]!;
            var value = (string?)variable["value"];
            if (variable["valueFrom"] is JsonObject from)
            {
                value = from["fieldRef"]?["fieldPath"]?.GetValue<string>() == "status.podIP"
                    ? podIp
                    : from["secretKeyRef"] is JsonObject secret
                        ? $"secret:{secret["name"]}/{secret["key"]}"
                        : throw new InvalidOperationException($"Unexpected valueFrom of {name}: {from}");
            }

            resolved[name] = VariableReference().Replace(value ?? "", match =>
                resolved.TryGetValue(match.Groups[1].Value, out var earlier) ? earlier : match.Value);
        }

        return resolved.Where(pair => pair.Key.Contains("__", StringComparison.Ordinal))
            .ToDictionary(pair => pair.Key.Replace("__", ":", StringComparison.Ordinal), pair => (string?)pair.Value);
    }

    public static RenderedChart Parse(string yaml)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(yaml));
        var manifests = new List<Manifest>();
        foreach (var document in stream.Documents)
        {
            // helm emits an empty document for a template that renders nothing.
            if (document.RootNode is YamlScalarNode { Value: null or "" })
            {
                continue;
            }

            var body = ToJson(document.RootNode)!.AsObject();
            manifests.Add(new Manifest(
                (string?)body["apiVersion"] ?? throw new InvalidOperationException("A document without apiVersion:\n" + body),
                (string?)body["kind"] ?? throw new InvalidOperationException("A document without kind:\n" + body),
                (string?)body["metadata"]?["name"] ?? throw new InvalidOperationException("A document without metadata.name:\n" + body),
                body));
        }

        return new RenderedChart(manifests);
    }

    /// <summary>YAML 1.2 core schema, as Kubernetes reads it: plain scalars may be null, booleans or numbers.</summary>
    private static JsonNode? ToJson(YamlNode node)
    {
        switch (node)
        {
            case YamlMappingNode mapping:
                var result = new JsonObject();
                foreach (var (key, value) in mapping.Children)
                {
                    result[((YamlScalarNode)key).Value!] = ToJson(value);
                }

                return result;
            case YamlSequenceNode sequence:
                return new JsonArray(sequence.Children.Select(ToJson).ToArray());
            case YamlScalarNode scalar when scalar.Style is ScalarStyle.Plain:
                var text = scalar.Value ?? "";
                if (text is "" or "~" or "null" or "Null" or "NULL")
                {
                    return null;
                }

                if (text is "true" or "True" or "TRUE" or "false" or "False" or "FALSE")
                {
                    return JsonValue.Create(bool.Parse(text));
                }

                if (IntegerPattern().IsMatch(text))
                {
                    return JsonValue.Create(long.Parse(text, CultureInfo.InvariantCulture));
                }

                if (FloatPattern().IsMatch(text))
                {
                    return JsonValue.Create(double.Parse(text, CultureInfo.InvariantCulture));
                }

                return JsonValue.Create(text);
            case YamlScalarNode scalar:
                return JsonValue.Create(scalar.Value ?? "");
            default:
                throw new InvalidOperationException($"Unexpected YAML node {node.NodeType} at {node.Start}.");
        }
    }

    [GeneratedRegex(@"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")]
    private static partial Regex VariableReference();

    [GeneratedRegex(@"^[-+]?[0-9]+$")]
    private static partial Regex IntegerPattern();

    [GeneratedRegex(@"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")]
    private static partial Regex FloatPattern();
}
