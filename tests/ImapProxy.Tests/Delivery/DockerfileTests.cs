using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using ImapProxy.Configuration;
using Xunit;

namespace ImapProxy.Tests.Delivery;

/// <summary>
/// The Dockerfile cannot be built here (no Docker engine), so its facts are checked against the repository:
/// what it copies exists and is in the build context, what it publishes and starts is the proxy, and the ports it
/// exposes are those it configures and those the chart's pods declare.
/// </summary>
public partial class DockerfileTests
{
    /// <summary>APP_UID of the mcr.microsoft.com/dotnet images since .NET 8: the non-root `app` user.</summary>
    private const long AppUid = 1654;

    [Fact]
    public void Stages_BuildOnTheSdk_RunOnTheAspNetRuntime()
    {
        var images = Dockerfile.Instructions.Where(i => i.Keyword == "FROM").Select(i => i.Arguments).ToList();

        Assert.Equal(2, images.Count);
        Assert.Equal("mcr.microsoft.com/dotnet/sdk:10.0 AS build", images[0]);
        Assert.StartsWith("mcr.microsoft.com/dotnet/aspnet:10.0", images[1], StringComparison.Ordinal);
        Assert.Contains(Dockerfile.FinalStage, i => i is { Keyword: "COPY", Arguments: "--from=build /app ./" });
        Assert.Contains(Dockerfile.FinalStage, i => i is { Keyword: "WORKDIR", Arguments: "/app" });
    }

    [Fact]
    public void Copies_OnlyPathsThatExist_AndThatTheBuildContextKeeps()
    {
        var sources = Sources().ToList();

        Assert.NotEmpty(sources);
        Assert.All(sources, source =>
        {
            var path = Repository.Path(source.TrimEnd('/'));
            Assert.True(File.Exists(path) || System.IO.Directory.Exists(path), $"COPY source {source} does not exist");
            Assert.True(Dockerfile.InContext(source), $"COPY source {source} is excluded by .dockerignore");
        });
        // Sources go in, local build output stays out.
        Assert.True(Dockerfile.InContext("src/ImapProxy/Program.cs"));
        Assert.False(Dockerfile.InContext("src/ImapProxy/bin/Release/net10.0/ImapProxy.dll"));
        Assert.False(Dockerfile.InContext("src/ImapProxy.Protocol/obj/project.assets.json"));
        Assert.False(Dockerfile.InContext("tests/ImapProxy.Tests/ImapProxy.Tests.csproj"));
        Assert.False(Dockerfile.InContext(".git/HEAD"));
    }

    [Fact]
    public void Restore_RunsBeforeTheSourcesAreCopied_WithEveryProjectItNeeds()
    {
        var instructions = Dockerfile.Instructions.ToList();
        var restore = instructions.FindIndex(i => i.Keyword == "RUN" && i.Arguments.StartsWith("dotnet restore ", StringComparison.Ordinal));
        Assert.True(restore > 0, "no RUN dotnet restore");
        var restored = instructions[restore].Arguments["dotnet restore ".Length..].Trim();
        Assert.Equal(Published(), restored);

        var copiedBefore = instructions.Take(restore).Where(i => i.Keyword == "COPY").SelectMany(i => Split(i.Arguments)[..^1]).ToHashSet();
        Assert.Contains("Directory.Packages.props", copiedBefore);
        Assert.Contains("Directory.Build.props", copiedBefore);
        Assert.Contains("global.json", copiedBefore);
        Assert.All(ProjectClosure(restored), project => Assert.Contains(project, copiedBefore));
        Assert.DoesNotContain("src/", copiedBefore);
    }

    [Fact]
    public void Publish_BuildsTheProxyProject_AndTheEntrypointStartsItsAssembly()
    {
        var project = Published();
        var projectFile = XDocument.Load(Repository.Path(project));
        var assemblyName = projectFile.Descendants("AssemblyName").FirstOrDefault()?.Value ?? Path.GetFileNameWithoutExtension(project);

        Assert.Equal("src/ImapProxy/ImapProxy.csproj", project);
        Assert.Equal("Exe", projectFile.Descendants("OutputType").Single().Value);
        var publish = Dockerfile.Instructions.Single(i => i.Keyword == "RUN" && i.Arguments.StartsWith("dotnet publish ", StringComparison.Ordinal)).Arguments;
        Assert.Contains("-c Release", publish, StringComparison.Ordinal);
        Assert.Contains("-o /app", publish, StringComparison.Ordinal);
        Assert.Contains("--no-restore", publish, StringComparison.Ordinal);
        var entrypoint = JsonSerializer.Deserialize<string[]>(Dockerfile.FinalStage.Single(i => i.Keyword == "ENTRYPOINT").Arguments)!;
        Assert.Equal(["dotnet", assemblyName + ".dll"], entrypoint);
    }

    [Fact]
    public async Task User_IsNonRoot_AndTheChartRunsAsTheSameUser()
    {
        var user = Dockerfile.FinalStage.Single(i => i.Keyword == "USER").Arguments;
        var uid = user == "$APP_UID" ? AppUid : long.Parse(user.Split(':')[0], System.Globalization.CultureInfo.InvariantCulture);
        var chart = await Helm.TemplateAsync();

        Assert.True(uid > 0);
        Assert.Equal(uid, (long)chart.PodSpec["securityContext"]!["runAsUser"]!);
    }

    [Fact]
    public void Environment_SelectsTheDefaultConfiguration_AndKeepsDiagnosticsOffTheReadOnlyFilesystem()
    {
        var environment = ImageEnvironment();

        Assert.Equal(DefaultConfigurationPath(), environment["IMAPPROXY_CONFIG"]);
        Assert.Equal("0", environment["DOTNET_EnableDiagnostics"]);
        Assert.Equal("", environment["ASPNETCORE_HTTP_PORTS"]);
    }

    [Fact]
    public async Task ExposedPorts_AreTheConfiguredListenersAndAdmin_AndTheChartsContainerPorts()
    {
        var configuration = DefaultConfiguration()["ImapProxy"]!;
        var configured = configuration["Listeners"]!.AsArray().Select(l => (long)l!["Port"]!).Append((long)configuration["Admin"]!["Port"]!).Order();
        var exposed = Dockerfile.FinalStage.Where(i => i.Keyword == "EXPOSE")
            .SelectMany(i => Split(i.Arguments)).Select(p => long.Parse(p.Split('/')[0], System.Globalization.CultureInfo.InvariantCulture)).Order();
        var chart = await Helm.TemplateAsync();
        var containerPorts = chart.Container["ports"]!.AsArray().Select(p => (long)p!["containerPort"]!).Order();

        Assert.Equal(configured, exposed);
        Assert.Equal(configured, containerPorts);
        Assert.All(exposed, port => Assert.InRange(port, 1024, 65535));
    }

    [Fact]
    public async Task DefaultConfiguration_WithBackendsFromTheEnvironment_IsAcceptedByTheProxy()
    {
        var chart = await Helm.TemplateAsync();
        var tlsMount = (string)chart.Container["volumeMounts"]!.AsArray().Single(m => (string?)m!["name"] == "tls")!["mountPath"]!;

        // docker run -e ImapProxy__Backends__Static__0__Id=b1 -e ImapProxy__Backends__Static__0__Host=... imapproxy
        var loaded = await ProxyConfigurationLoader.LoadAsync(DefaultConfiguration().ToJsonString(), new Dictionary<string, string?>
        {
            ["ImapProxy:Backends:Static:0:Id"] = "b1",
            ["ImapProxy:Backends:Static:0:Host"] = "imap-backend",
        });

        Assert.Empty(loaded.Failures);
        Assert.Equal([("imap", 1143, ListenerTls.StartTls), ("imaps", 1993, ListenerTls.Implicit)],
            loaded.Options!.Listeners.Select(l => (l.Name, l.Port, l.Tls)));
        Assert.Equal("0.0.0.0", loaded.Options.Admin.Address);
        // The image and the chart agree on where the certificate is.
        Assert.All(loaded.Files, file => Assert.StartsWith(tlsMount + "/", file.Path, StringComparison.Ordinal));
        Assert.Equal(2, loaded.Files.Count);
    }

    private static string Published()
    {
        var publish = Dockerfile.Instructions.Single(i => i.Keyword == "RUN" && i.Arguments.StartsWith("dotnet publish ", StringComparison.Ordinal));
        return Split(publish.Arguments)[2];
    }

    /// <summary>The project and every project it references, transitively, as repository-relative paths.</summary>
    private static HashSet<string> ProjectClosure(string project)
    {
        var closure = new HashSet<string>(StringComparer.Ordinal);
        var pending = new Stack<string>([project]);
        while (pending.TryPop(out var current))
        {
            if (!closure.Add(current))
            {
                continue;
            }

            var directory = Path.GetDirectoryName(Repository.Path(current))!;
            foreach (var reference in XDocument.Load(Repository.Path(current)).Descendants("ProjectReference"))
            {
                var full = Path.GetFullPath(Path.Combine(directory, reference.Attribute("Include")!.Value.Replace('\\', '/')));
                pending.Push(Path.GetRelativePath(Repository.Root, full).Replace('\\', '/'));
            }
        }

        return closure;
    }

    /// <summary>COPY sources from the build context (not from another stage).</summary>
    private static IEnumerable<string> Sources() =>
        Dockerfile.Instructions.Where(i => i.Keyword == "COPY" && !i.Arguments.StartsWith("--from", StringComparison.Ordinal))
            .SelectMany(i => Split(i.Arguments)[..^1]);

    private static Dictionary<string, string> ImageEnvironment() =>
        Dockerfile.FinalStage.Where(i => i.Keyword == "ENV")
            .SelectMany(i => Split(i.Arguments))
            .Select(pair => pair.Split('=', 2))
            .ToDictionary(pair => pair[0], pair => pair[1]);

    private static string DefaultConfigurationPath() => DefaultConfigurationInstruction().Path;

    private static JsonObject DefaultConfiguration() => JsonNode.Parse(DefaultConfigurationInstruction().Json)!.AsObject();

    /// <summary>The RUN printf '%s\n' 'line' ... &gt; FILE that writes the image's default configuration.</summary>
    private static (string Json, string Path) DefaultConfigurationInstruction()
    {
        var run = Dockerfile.Instructions.Single(i => i.Keyword == "RUN" && i.Arguments.StartsWith("printf ", StringComparison.Ordinal) && i.Arguments.Contains(".json", StringComparison.Ordinal)).Arguments;
        var lines = SingleQuoted().Matches(run).Select(m => m.Groups[1].Value).Skip(1);
        var target = Redirect().Match(run).Groups[1].Value;
        return (string.Join('\n', lines), target);
    }

    private static string[] Split(string arguments) => arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    [GeneratedRegex("'([^']*)'")]
    private static partial Regex SingleQuoted();

    [GeneratedRegex(@">\s*(\S+)\s*$")]
    private static partial Regex Redirect();
}
