using System.Text.Json.Nodes;
using Xunit;

namespace ImapProxy.Tests.Delivery;

/// <summary>
/// helm lint and helm template of helm/imapproxy with the default values and with ci/full-values.yaml (everything
/// enabled): the objects, their API versions and the fields a cluster relies on.
/// </summary>
public class HelmChartTests
{
    public static TheoryData<string> ValuesFiles => new() { "default", "full" };

    internal static string[] Arguments(string values) => values switch
    {
        "default" => [],
        "full" => ["-f", Helm.FullValues],
        _ => throw new ArgumentOutOfRangeException(nameof(values), values, null),
    };

    [Theory]
    [MemberData(nameof(ValuesFiles))]
    public async Task Lint_Passes(string values)
    {
        var result = await Helm.LintAsync(Arguments(values));

        Assert.True(result.ExitCode == 0, result.Output + result.Error);
        Assert.Contains("0 chart(s) failed", result.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Template_DefaultValues_RendersTheCoreObjects()
    {
        var chart = await Helm.TemplateAsync();

        Assert.Equal(
            [
                "apps/v1 Deployment mail-imapproxy",
                "policy/v1 PodDisruptionBudget mail-imapproxy",
                "v1 ConfigMap mail-imapproxy",
                "v1 Service mail-imapproxy",
                "v1 Service mail-imapproxy-admin",
                "v1 ServiceAccount mail-imapproxy",
            ],
            Describe(chart));
    }

    [Fact]
    public async Task Template_FullValues_RendersEveryOptionalObject()
    {
        var chart = await Helm.TemplateAsync(Arguments("full"));

        Assert.Equal(
            [
                "apps/v1 Deployment mail-imapproxy",
                "autoscaling/v2 HorizontalPodAutoscaler mail-imapproxy",
                "cert-manager.io/v1 Certificate mail-imapproxy",
                "monitoring.coreos.com/v1 ServiceMonitor mail-imapproxy",
                "networking.k8s.io/v1 NetworkPolicy mail-imapproxy",
                "policy/v1 PodDisruptionBudget mail-imapproxy",
                "v1 ConfigMap mail-imapproxy",
                "v1 ConfigMap mail-imapproxy-dashboard",
                "v1 Service mail-imapproxy",
                "v1 Service mail-imapproxy-admin",
                "v1 ServiceAccount mail-imapproxy",
            ],
            Describe(chart));
    }

    [Theory]
    [MemberData(nameof(ValuesFiles))]
    public async Task EveryObject_IsInTheReleaseNamespace_WithTheChartsLabels(string values)
    {
        var chart = await Helm.TemplateAsync(Arguments(values));

        Assert.All(chart.Manifests, manifest =>
        {
            Assert.Equal(Helm.Namespace, (string?)manifest.Metadata["namespace"]);
            var labels = manifest.Metadata["labels"]!.AsObject();
            Assert.Equal("imapproxy", (string?)labels["app.kubernetes.io/name"]);
            Assert.Equal(Helm.ReleaseName, (string?)labels["app.kubernetes.io/instance"]);
            Assert.Equal("Helm", (string?)labels["app.kubernetes.io/managed-by"]);
        });
    }

    [Theory]
    [MemberData(nameof(ValuesFiles))]
    public async Task Deployment_ProbesUseTheAdminPort(string values)
    {
        var chart = await Helm.TemplateAsync(Arguments(values));
        var container = chart.Container;
        var adminPort = (long)chart.Configuration["ImapProxy"]!["Admin"]!["Port"]!;

        Assert.Equal(adminPort, (long)container["ports"]!.AsArray().Single(p => (string?)p!["name"] == "admin")!["containerPort"]!);
        AssertProbe(container["livenessProbe"], "/healthz");
        AssertProbe(container["readinessProbe"], "/readyz");
        AssertProbe(container["startupProbe"], "/healthz");

        static void AssertProbe(JsonNode? probe, string path)
        {
            Assert.NotNull(probe);
            Assert.Equal(path, (string?)probe["httpGet"]!["path"]);
            Assert.Equal("admin", (string?)probe["httpGet"]!["port"]);
        }
    }

    [Theory]
    [MemberData(nameof(ValuesFiles))]
    public async Task Deployment_RunsNonRoot_ReadOnly_WithoutCapabilities(string values)
    {
        var chart = await Helm.TemplateAsync(Arguments(values));
        var pod = chart.PodSpec["securityContext"]!;
        var container = chart.Container["securityContext"]!;

        Assert.True((bool)pod["runAsNonRoot"]!);
        Assert.True((long)pod["runAsUser"]! > 0);
        Assert.Equal("RuntimeDefault", (string?)pod["seccompProfile"]!["type"]);
        Assert.True((bool)container["runAsNonRoot"]!);
        Assert.True((bool)container["readOnlyRootFilesystem"]!);
        Assert.False((bool)container["allowPrivilegeEscalation"]!);
        Assert.Equal(["ALL"], container["capabilities"]!["drop"]!.AsArray().Select(c => (string)c!));
        Assert.Null(container["capabilities"]!["add"]);
        Assert.False((bool)chart.PodSpec["automountServiceAccountToken"]!);

        // The only writable place: /tmp, an emptyDir.
        var tmp = chart.Container["volumeMounts"]!.AsArray().Single(m => (string?)m!["mountPath"] == "/tmp")!;
        var volume = chart.PodSpec["volumes"]!.AsArray().Single(v => (string?)v!["name"] == (string?)tmp["name"])!;
        Assert.NotNull(volume["emptyDir"]);
        Assert.All(chart.Container["volumeMounts"]!.AsArray().Where(m => (string?)m!["mountPath"] != "/tmp"), m => Assert.True((bool)m!["readOnly"]!));
    }

    [Theory]
    [MemberData(nameof(ValuesFiles))]
    public async Task Deployment_TerminationGrace_CoversPreStopDrainAndHostStop(string values)
    {
        var chart = await Helm.TemplateAsync(Arguments(values));
        var grace = TimeSpan.Parse((string)chart.Configuration["ImapProxy"]!["Session"]!["ShutdownGrace"]!, System.Globalization.CultureInfo.InvariantCulture);
        var preStop = chart.Container["lifecycle"]!["preStop"]!["exec"]!["command"]!.AsArray().Select(c => (string)c!).ToArray();
        Assert.Equal("sleep", preStop[0]);
        var sleep = int.Parse(preStop[1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(sleep, 1, 60);

        // Kubernetes counts the preStop hook inside the grace period; after SIGTERM the proxy drains for
        // ShutdownGrace and its host stops at most 5 s later (ImapProxyHost: ShutdownTimeout = grace + 5 s).
        var terminationGrace = (long)chart.PodSpec["terminationGracePeriodSeconds"]!;
        Assert.True(terminationGrace >= sleep + grace.TotalSeconds + 5, $"terminationGracePeriodSeconds {terminationGrace} < preStop {sleep} + grace {grace.TotalSeconds} + 5");
    }

    [Fact]
    public async Task Deployment_PreStopSleepAction_CanReplaceTheSleepCommand()
    {
        var chart = await Helm.TemplateAsync("--set", "shutdown.preStopAction=sleep");

        Assert.Equal(5, (long)chart.Container["lifecycle"]!["preStop"]!["sleep"]!["seconds"]!);
        Assert.Null(chart.Container["lifecycle"]!["preStop"]!["exec"]);
    }

    [Theory]
    [MemberData(nameof(ValuesFiles))]
    public async Task Deployment_ContainerPorts_AreTheConfiguredListeners(string values)
    {
        var chart = await Helm.TemplateAsync(Arguments(values));
        var configuration = chart.Configuration["ImapProxy"]!;
        var configured = configuration["Listeners"]!.AsArray()
            .Select(l => ((string)l!["Name"]!, (long)l["Port"]!))
            .Append(("admin", (long)configuration["Admin"]!["Port"]!));
        var containerPorts = chart.Container["ports"]!.AsArray().Select(p => ((string)p!["name"]!, (long)p["containerPort"]!));

        Assert.Equal(configured.Order(), containerPorts.Order());
        Assert.All(configuration["Listeners"]!.AsArray(), l => Assert.Equal("0.0.0.0", (string?)l!["Address"]));
        Assert.Equal("0.0.0.0", (string?)configuration["Admin"]!["Address"]);
    }

    [Theory]
    [MemberData(nameof(ValuesFiles))]
    public async Task Services_MapTheStandardPortsToTheListeners_AndSelectThePods(string values)
    {
        var chart = await Helm.TemplateAsync(Arguments(values));
        var podLabels = chart.Get("Deployment").Spec["template"]!["metadata"]!["labels"]!.AsObject();
        var containerPorts = chart.Container["ports"]!.AsArray().Select(p => (string)p!["name"]!).ToHashSet();

        var imap = chart.Get("Service", chart.FullName);
        Assert.Equal(
            [("imap", 143L, "imap"), ("imaps", 993L, "imaps")],
            imap.Spec["ports"]!.AsArray().Select(p => ((string)p!["name"]!, (long)p["port"]!, (string)p["targetPort"]!)));
        var admin = chart.Get("Service", chart.FullName + "-admin");
        Assert.Equal("ClusterIP", (string?)admin.Spec["type"]);
        Assert.Equal([("admin", 8080L, "admin")], admin.Spec["ports"]!.AsArray().Select(p => ((string)p!["name"]!, (long)p["port"]!, (string)p["targetPort"]!)));

        foreach (var service in new[] { imap, admin })
        {
            Assert.All(service.Spec["ports"]!.AsArray(), p => Assert.Contains((string)p!["targetPort"]!, containerPorts));
            Assert.All(service.Spec["selector"]!.AsObject(), s => Assert.Equal((string?)s.Value, (string?)podLabels[s.Key]));
        }
    }

    [Fact]
    public async Task DefaultValues_ClusterIpService_WithoutProxyProtocol()
    {
        var chart = await Helm.TemplateAsync();
        var service = chart.Get("Service", chart.FullName);

        Assert.Equal("ClusterIP", (string?)service.Spec["type"]);
        Assert.Null(service.Spec["externalTrafficPolicy"]);
        Assert.Null(service.Metadata["annotations"]);
        Assert.All(chart.Configuration["ImapProxy"]!["Listeners"]!.AsArray(), l =>
        {
            Assert.Null(l!["ProxyProtocol"]);
            Assert.Null(l["ProxyProtocolTrustedNetworks"]);
        });
    }

    [Fact]
    public async Task FullValues_LoadBalancerWithLocalPolicy_ProxyProtocolAnnotationsAndListenerKeys()
    {
        var chart = await Helm.TemplateAsync(Arguments("full"));
        var service = chart.Get("Service", chart.FullName);
        var annotations = service.Metadata["annotations"]!.AsObject();

        Assert.Equal("LoadBalancer", (string?)service.Spec["type"]);
        Assert.Equal("Local", (string?)service.Spec["externalTrafficPolicy"]);
        Assert.Equal("true", (string?)annotations["load-balancer.hetzner.cloud/uses-proxyprotocol"]);
        Assert.Equal("*", (string?)annotations["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"]);
        Assert.Equal("fsn1", (string?)annotations["load-balancer.hetzner.cloud/location"]);
        Assert.All(chart.Configuration["ImapProxy"]!["Listeners"]!.AsArray(), l =>
        {
            Assert.True((bool)l!["ProxyProtocol"]!);
            Assert.Equal(["10.0.0.0/8", "192.168.0.0/16"], l["ProxyProtocolTrustedNetworks"]!.AsArray().Select(n => (string)n!));
        });
        // The admin Service never goes through the load balancer.
        Assert.Null(chart.Get("Service", chart.FullName + "-admin").Metadata["annotations"]);
    }

    [Fact]
    public async Task FullValues_CertManagerCertificate_WritesTheMountedSecret()
    {
        var chart = await Helm.TemplateAsync(Arguments("full"));
        var certificate = chart.Get("Certificate");
        var tlsVolume = chart.PodSpec["volumes"]!.AsArray().Single(v => (string?)v!["name"] == "tls")!;
        var tlsMount = chart.Container["volumeMounts"]!.AsArray().Single(m => (string?)m!["name"] == "tls")!;
        var tls = chart.Configuration["ImapProxy"]!["Tls"]!;

        Assert.Equal((string?)certificate.Spec["secretName"], (string?)tlsVolume["secret"]!["secretName"]);
        Assert.Equal(["imap.example.com", "mail.example.com"], certificate.Spec["dnsNames"]!.AsArray().Select(n => (string)n!));
        Assert.Equal("letsencrypt-prod", (string?)certificate.Spec["issuerRef"]!["name"]);
        Assert.Equal("ClusterIssuer", (string?)certificate.Spec["issuerRef"]!["kind"]);
        Assert.Contains("server auth", certificate.Spec["usages"]!.AsArray().Select(u => (string)u!));
        Assert.Equal((string)tlsMount["mountPath"]! + "/tls.crt", (string?)tls["CertificateFile"]);
        Assert.Equal((string)tlsMount["mountPath"]! + "/tls.key", (string?)tls["KeyFile"]);
    }

    [Fact]
    public async Task SessionTicketKeysSecret_IsMounted_AndItsFileConfigured_OnlyWhenGiven()
    {
        var chart = await Helm.TemplateAsync(Arguments("full"));
        var volume = chart.PodSpec["volumes"]!.AsArray().Single(v => (string?)v!["name"] == "ticket-keys")!;
        var mount = chart.Container["volumeMounts"]!.AsArray().Single(m => (string?)m!["name"] == "ticket-keys")!;
        var tls = chart.Configuration["ImapProxy"]!["Tls"]!;

        Assert.Equal("mail-imapproxy-ticket-keys", (string?)volume["secret"]!["secretName"]);
        Assert.Equal("ticket-keys", (string?)volume["secret"]!["items"]![0]!["key"]);
        Assert.True((bool)mount["readOnly"]!);
        Assert.Equal((string)mount["mountPath"]! + "/" + (string)volume["secret"]!["items"]![0]!["path"]!, (string?)tls["SessionTicketKeyFile"]);

        var defaults = await Helm.TemplateAsync();
        Assert.DoesNotContain(defaults.PodSpec["volumes"]!.AsArray(), v => (string?)v!["name"] == "ticket-keys");
        Assert.Null(defaults.Configuration["ImapProxy"]!["Tls"]!["SessionTicketKeyFile"]);
        Assert.Equal("01:00:00", (string?)defaults.Configuration["ImapProxy"]!["Tls"]!["SessionTicketKeyRotation"]);
    }

    [Fact]
    public async Task DefaultValues_TlsSecret_IsTheConventionalName()
    {
        var chart = await Helm.TemplateAsync();

        var tlsVolume = chart.PodSpec["volumes"]!.AsArray().Single(v => (string?)v!["name"] == "tls")!;
        Assert.Equal("mail-imapproxy-tls", (string?)tlsVolume["secret"]!["secretName"]);
        Assert.Equal("existing-cert", (string?)(await Helm.TemplateAsync("--set", "tls.existingSecret=existing-cert"))
            .PodSpec["volumes"]!.AsArray().Single(v => (string?)v!["name"] == "tls")!["secret"]!["secretName"]);
    }

    [Fact]
    public async Task FullValues_ServiceMonitor_ScrapesMetricsFromTheAdminService()
    {
        var chart = await Helm.TemplateAsync(Arguments("full"));
        var monitor = chart.Get("ServiceMonitor");
        var admin = chart.Get("Service", chart.FullName + "-admin");
        var imap = chart.Get("Service", chart.FullName);

        var endpoint = monitor.Spec["endpoints"]!.AsArray().Single()!;
        Assert.Equal("admin", (string?)endpoint["port"]);
        Assert.Equal("/metrics", (string?)endpoint["path"]);
        Assert.Equal("kube-prometheus-stack", (string?)monitor.Metadata["labels"]!["release"]);
        var selector = monitor.Spec["selector"]!["matchLabels"]!.AsObject();
        Assert.All(selector, s => Assert.Equal((string?)s.Value, (string?)admin.Metadata["labels"]![s.Key]));
        Assert.Contains(selector, s => (string?)imap.Metadata["labels"]![s.Key] != (string?)s.Value);
        Assert.True((bool)chart.Configuration["ImapProxy"]!["Telemetry"]!["PrometheusEnabled"]!);
    }

    [Fact]
    public async Task FullValues_Autoscaler_OwnsTheReplicaCount()
    {
        var chart = await Helm.TemplateAsync(Arguments("full"));
        var hpa = chart.Get("HorizontalPodAutoscaler");

        Assert.Equal("Deployment", (string?)hpa.Spec["scaleTargetRef"]!["kind"]);
        Assert.Equal(chart.FullName, (string?)hpa.Spec["scaleTargetRef"]!["name"]);
        Assert.Equal(3, (long)hpa.Spec["minReplicas"]!);
        Assert.Equal(12, (long)hpa.Spec["maxReplicas"]!);
        Assert.Equal(["cpu", "memory"], hpa.Spec["metrics"]!.AsArray().Select(m => (string)m!["resource"]!["name"]!));
        Assert.Null(chart.Get("Deployment").Spec["replicas"]);
        Assert.Equal(2, (long)(await Helm.TemplateAsync()).Get("Deployment").Spec["replicas"]!);
    }

    [Theory]
    [MemberData(nameof(ValuesFiles))]
    public async Task PodDisruptionBudget_SelectsThePods(string values)
    {
        var chart = await Helm.TemplateAsync(Arguments(values));
        var pdb = chart.Get("PodDisruptionBudget");
        var podLabels = chart.Get("Deployment").Spec["template"]!["metadata"]!["labels"]!.AsObject();

        Assert.All(pdb.Spec["selector"]!["matchLabels"]!.AsObject(), s => Assert.Equal((string?)s.Value, (string?)podLabels[s.Key]));
        Assert.True(pdb.Spec["minAvailable"] is not null ^ pdb.Spec["maxUnavailable"] is not null);
    }

    [Fact]
    public async Task FullValues_NetworkPolicy_OpensImapAndAdminPorts_AndRestrictsEgress()
    {
        var chart = await Helm.TemplateAsync(Arguments("full"));
        var policy = chart.Get("NetworkPolicy");
        var ingress = policy.Spec["ingress"]!.AsArray();

        Assert.Equal(["Ingress", "Egress"], policy.Spec["policyTypes"]!.AsArray().Select(t => (string)t!));
        Assert.Equal(["imap", "imaps"], ingress[0]!["ports"]!.AsArray().Select(p => (string)p!["port"]!));
        Assert.Equal(["admin"], ingress[1]!["ports"]!.AsArray().Select(p => (string)p!["port"]!));
        var adminFrom = ingress[1]!["from"]!.AsArray();
        Assert.Contains(adminFrom, f => (string?)f!["namespaceSelector"]?["matchLabels"]?["kubernetes.io/metadata.name"] == "monitoring");
        Assert.Contains(adminFrom, f => (string?)f!["ipBlock"]?["cidr"] == "10.0.0.0/8");

        var egressPorts = policy.Spec["egress"]!.AsArray().SelectMany(r => r!["ports"]!.AsArray().Select(p => (long)p!["port"]!)).ToHashSet();
        Assert.Superset(new HashSet<long> { 53, 143, 993, 8500, 4317 }, egressPorts);
        Assert.Contains(policy.Spec["egress"]!.AsArray(), r => (string?)r!["to"]?[0]?["ipBlock"]?["cidr"] == "10.40.0.0/16");
    }

    [Fact]
    public async Task ConsulToken_FromValues_IsASecretPassedByEnvironment_NeverInTheConfigMap()
    {
        var chart = await Helm.TemplateAsync(
            "--set", "consul.enabled=true",
            "--set", "consul.addresses[0]=http://consul.consul.svc:8500",
            "--set", "consul.token=very-secret-token");
        var secret = chart.Get("Secret", chart.FullName + "-consul");
        var variable = chart.Container["env"]!.AsArray().Single(e => (string?)e!["name"] == "ImapProxy__Consul__Token")!;

        Assert.Equal("very-secret-token", System.Text.Encoding.UTF8.GetString(Convert.FromBase64String((string)secret.Body["data"]!["token"]!)));
        Assert.Equal(secret.Name, (string?)variable["valueFrom"]!["secretKeyRef"]!["name"]);
        Assert.Equal("token", (string?)variable["valueFrom"]!["secretKeyRef"]!["key"]);
        Assert.DoesNotContain("very-secret-token", chart.ConfigurationJson, StringComparison.Ordinal);
        Assert.DoesNotContain("Token", chart.ConfigurationJson, StringComparison.Ordinal);
        Assert.NotNull(chart.Get("Deployment").Spec["template"]!["metadata"]!["annotations"]!["checksum/consul-token"]);
    }

    [Fact]
    public async Task ConsulToken_FromAnExistingSecret_CreatesNoSecret()
    {
        var chart = await Helm.TemplateAsync(Arguments("full"));
        var variable = chart.Container["env"]!.AsArray().Single(e => (string?)e!["name"] == "ImapProxy__Consul__Token")!;

        Assert.DoesNotContain(chart.Manifests, m => m.Kind == "Secret");
        Assert.Equal("imapproxy-consul-acl", (string?)variable["valueFrom"]!["secretKeyRef"]!["name"]);
        Assert.Equal("acl-token", (string?)variable["valueFrom"]!["secretKeyRef"]!["key"]);
    }

    [Fact]
    public async Task ConfigChecksum_ChangesWithTheConfiguration()
    {
        static async Task<string> Checksum(params string[] arguments) =>
            (string)(await Helm.TemplateAsync(arguments)).Get("Deployment").Spec["template"]!["metadata"]!["annotations"]!["checksum/config"]!;

        var first = await Checksum();
        Assert.Matches("^[0-9a-f]{64}$", first);
        Assert.Equal(first, await Checksum());
        Assert.NotEqual(first, await Checksum("--set", "preAuth.greeting=Hello"));
    }

    [Theory]
    [InlineData("proxyProtocol.enabled=true", "proxyProtocol.trustedNetworks")]
    [InlineData("consul.enabled=true", "consul.addresses")]
    [InlineData("tls.certManager.enabled=true", "tls.certManager.dnsNames")]
    [InlineData("session.shutdownGrace=30s", "session.shutdownGrace")]
    [InlineData("admin.port=80", "admin.port")]
    [InlineData("service.type=ExternalName", "service.type")]
    [InlineData("preAuth.greetng=Hi", "greetng")]
    [InlineData("telemetry.otlpProtocol=http", "telemetry.otlpProtocol")]
    [InlineData("tls.existingSecret=a,tls.certManager.enabled=true,tls.certManager.dnsNames[0]=a.example,tls.certManager.issuerRef.name=i", "tls.existingSecret or tls.certManager.enabled")]
    [InlineData("consul.enabled=true,consul.addresses[0]=http://c:8500,consul.token=t,consul.tokenFile=/t", "at most one of consul.token")]
    [InlineData("metrics.serviceMonitor.enabled=true,telemetry.prometheusEnabled=false", "telemetry.prometheusEnabled")]
    public async Task InvalidValues_AreRefused_NamingTheValue(string set, string expected)
    {
        var result = await Helm.TryTemplateAsync("--set", set);

        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains(expected, result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Listeners_NamedLikeTheAdminPort_OrSharingAPort_AreRefused()
    {
        var admin = await Helm.TryTemplateAsync("--set", "listeners[0].name=admin,listeners[0].tls=None,listeners[0].containerPort=1143,listeners[0].servicePort=143");
        var shared = await Helm.TryTemplateAsync("--set", "listeners[0].name=imap,listeners[0].tls=None,listeners[0].containerPort=8080,listeners[0].servicePort=143");

        Assert.NotEqual(0, admin.ExitCode);
        Assert.Contains("listeners.0.name", admin.Error, StringComparison.Ordinal);
        Assert.NotEqual(0, shared.ExitCode);
        Assert.Contains("containerPort 8080", shared.Error, StringComparison.Ordinal);
    }

    private static List<string> Describe(RenderedChart chart) =>
        chart.Manifests.Select(m => $"{m.ApiVersion} {m.Kind} {m.Name}").Order(StringComparer.Ordinal).ToList();
}
