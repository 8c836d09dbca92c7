using ImapProxy.Testing.Dovecot;

namespace ImapProxy.Testing.Prometheus;

/// <summary>What promtool said: its exit code and everything it printed.</summary>
public sealed record PromtoolResult(int ExitCode, string Output)
{
    public bool Succeeded => ExitCode == 0;
}

/// <summary>
/// Prometheus's own checker (<c>/usr/bin/promtool</c>, from the prometheus package): the same parser and PromQL
/// engine the server uses, so a file it accepts is a file the server loads.
/// </summary>
public static class Promtool
{
    private const string PromtoolPath = "/usr/bin/promtool";

    /// <summary><c>promtool check rules FILE</c>: YAML, rule names, PromQL syntax, label and annotation templates.</summary>
    public static Task<PromtoolResult> CheckRulesAsync(string path, CancellationToken cancellationToken = default) =>
        RunAsync(["check", "rules", path], cancellationToken);

    /// <summary><c>promtool check config FILE</c>: the configuration and every rule file it names.</summary>
    public static Task<PromtoolResult> CheckConfigAsync(string path, CancellationToken cancellationToken = default) =>
        RunAsync(["check", "config", path], cancellationToken);

    /// <summary><c>promtool test rules FILE</c>: runs the rule unit tests (input series, expected alerts) in FILE.</summary>
    public static Task<PromtoolResult> TestRulesAsync(string path, CancellationToken cancellationToken = default) =>
        RunAsync(["test", "rules", path], cancellationToken);

    private static async Task<PromtoolResult> RunAsync(IReadOnlyList<string> arguments, CancellationToken cancellationToken)
    {
        if (!File.Exists(PromtoolPath))
        {
            throw new InvalidOperationException($"{PromtoolPath} not found: install Prometheus with scripts/install-deps.sh.");
        }

        var result = await ToolRunner.RunAsync(PromtoolPath, arguments, cancellationToken);
        return new PromtoolResult(result.ExitCode, $"promtool {string.Join(' ', arguments)} (exit {result.ExitCode}):\n{result.Output}{result.Error}");
    }
}
