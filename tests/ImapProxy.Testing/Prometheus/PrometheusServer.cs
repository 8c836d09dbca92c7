using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using ImapProxy.Testing.Processes;

namespace ImapProxy.Testing.Prometheus;

/// <summary>One series of an instant query's answer: its labels (<c>__name__</c> included when kept) and value.</summary>
public sealed record PrometheusSample(IReadOnlyDictionary<string, string> Labels, double Value)
{
    public string this[string label] => Labels.TryGetValue(label, out var value) ? value : "";

    public override string ToString() =>
        "{" + string.Join(", ", Labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}=\"{l.Value}\"")) + "} " +
        Value.ToString(CultureInfo.InvariantCulture);
}

/// <summary>A recording or alerting rule as the running server evaluates it (<c>/api/v1/rules</c>).</summary>
public sealed record PrometheusRule(string Group, string Name, string Type, string Health, string LastError);

/// <summary>
/// A real Prometheus server (<c>/usr/bin/prometheus</c>, 2.42 from Debian 12) for one test: its own directory
/// (generated config, TSDB), a free port on 127.0.0.1, scraping its targets every second and evaluating its rule
/// files every second, run as a child process.
/// </summary>
/// <remarks>
/// Needs the prometheus package (<c>scripts/install-deps.sh</c>); no root. Every target is scraped as job
/// <see cref="JobName"/> at <c>/metrics</c> over HTTP. The query methods are thin wrappers over the HTTP API
/// and throw on an error answer; the waits poll it, bounded, and never sleep a fixed time instead.
/// </remarks>
public sealed class PrometheusServer : IAsyncDisposable
{
    public const string JobName = "imapproxy";

    private static readonly InstanceDirectories s_instances = new("imapproxy-prometheus", "prometheus");

    private const string PrometheusPath = "/usr/bin/prometheus";
    private const int MaxPortAttempts = 5;
    private const int MaxOutputChars = 64 * 1024;

    private static readonly TimeSpan s_startTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan s_stopTimeout = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan s_probeTimeout = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan s_requestTimeout = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan s_pollInterval = TimeSpan.FromMilliseconds(250);

    private readonly SemaphoreSlim _lifecycle = new(1, 1);
    private readonly StringBuilder _output = new();
    private readonly HttpClient _http;
    private Process? _process;
    private bool _disposed;

    private PrometheusServer(string directory, int port)
    {
        DataDirectory = directory;
        ConfigPath = Path.Combine(directory, "prometheus.yml");
        Address = new Uri(string.Create(CultureInfo.InvariantCulture, $"http://127.0.0.1:{port}"));
        _http = new HttpClient(new SocketsHttpHandler { ConnectTimeout = s_probeTimeout })
        {
            BaseAddress = Address,
            Timeout = s_requestTimeout,
        };
    }

    /// <summary>The web and API address, <c>http://127.0.0.1:&lt;port&gt;</c>.</summary>
    public Uri Address { get; }

    /// <summary>The generated configuration (scrape targets, rule files), for <c>promtool check config</c>.</summary>
    public string ConfigPath { get; }

    /// <summary>The server's own directory (config, TSDB); deleted on dispose unless IMAPPROXY_KEEP_PROMETHEUS_DIRS=1.</summary>
    public string DataDirectory { get; }

    /// <summary>Whether the server process is running.</summary>
    public bool IsRunning => _process is { HasExited: false };

    /// <summary>Starts a server scraping <paramref name="targets"/> and returns once it reports ready (<c>/-/ready</c>).</summary>
    /// <param name="targets">HTTP endpoints that serve <c>/metrics</c> (the proxy's admin endpoint).</param>
    /// <param name="ruleFiles">Rule files to load and evaluate (absolute paths); the start fails if one does not load.</param>
    public static async Task<PrometheusServer> StartAsync(
        IEnumerable<IPEndPoint> targets,
        IEnumerable<string>? ruleFiles = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(targets);
        var targetList = targets.ToList();
        var ruleList = ruleFiles?.ToList() ?? [];
        if (targetList.Count == 0)
        {
            throw new ArgumentException("At least one scrape target is needed.", nameof(targets));
        }

        foreach (var rules in ruleList)
        {
            if (!Path.IsPathFullyQualified(rules) || !File.Exists(rules))
            {
                throw new ArgumentException($"Rule file not found (an absolute path is needed): {rules}", nameof(ruleFiles));
            }
        }

        if (!File.Exists(PrometheusPath))
        {
            throw new InvalidOperationException($"{PrometheusPath} not found: install Prometheus with scripts/install-deps.sh.");
        }

        await s_instances.PrepareAsync(cancellationToken);

        var id = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(5));
        var directory = Path.Combine(s_instances.RootDirectory, id);
        System.IO.Directory.CreateDirectory(directory);
        InstanceDirectories.WriteOwner(directory);
        for (var attempt = 1; ; attempt++)
        {
            // Another process may take the port between our probe and Prometheus's bind: pick again.
            var server = new PrometheusServer(directory, PickFreePort());
            try
            {
                server.WriteConfig(targetList, ruleList);
                if (await server.LaunchAsync(cancellationToken))
                {
                    return server;
                }
            }
            catch
            {
                await server.DisposeAsync();
                throw;
            }

            var diagnostics = server.Diagnostics();
            if (attempt == MaxPortAttempts)
            {
                await server.DisposeAsync();
                throw new InvalidOperationException($"Prometheus could not bind a free port on 127.0.0.1 in {MaxPortAttempts} attempts.\n{diagnostics}");
            }

            // Keep the directory (and its owner file) for the next attempt.
            server._http.Dispose();
        }
    }

    /// <summary>Runs an instant query (<c>/api/v1/query</c>) that must answer a vector (or a scalar, as one sample).</summary>
    public async Task<IReadOnlyList<PrometheusSample>> QueryAsync(string promQl, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(promQl);
        using var data = await GetDataAsync("api/v1/query?query=" + Uri.EscapeDataString(promQl), cancellationToken);
        var root = data.RootElement;
        var resultType = root.GetProperty("resultType").GetString();
        var result = root.GetProperty("result");
        switch (resultType)
        {
            case "vector":
                return [.. result.EnumerateArray().Select(sample => new PrometheusSample(
                    sample.GetProperty("metric").EnumerateObject().ToDictionary(l => l.Name, l => l.Value.GetString() ?? "", StringComparer.Ordinal),
                    ParseValue(sample.GetProperty("value"))))];
            case "scalar":
                return [new PrometheusSample(new Dictionary<string, string>(), ParseValue(result))];
            default:
                throw new InvalidOperationException($"Prometheus answered a {resultType} to '{promQl}'; only vectors and scalars are supported.");
        }
    }

    /// <summary>
    /// Polls an instant query until <paramref name="predicate"/> holds for its answer; returns that answer.
    /// </summary>
    /// <exception cref="TimeoutException">Not within <paramref name="timeout"/>; the message has the last answer.</exception>
    public async Task<IReadOnlyList<PrometheusSample>> WaitForQueryAsync(
        string promQl,
        Func<IReadOnlyList<PrometheusSample>, bool> predicate,
        TimeSpan timeout,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(predicate);
        var (samples, matched) = await PollAsync(ct => QueryAsync(promQl, ct), predicate, timeout, cancellationToken);
        if (!matched)
        {
            throw new TimeoutException(
                $"Prometheus: '{promQl}' did not match within {timeout}; last answer:\n{(samples.Count == 0 ? "(empty)" : string.Join('\n', samples))}\n" +
                $"Targets:\n{string.Join('\n', await TargetsAsync(cancellationToken))}");
        }

        return samples;
    }

    /// <summary>
    /// The one polling loop of this fixture (Prometheus has no push to wait on): reads until <paramref name="done"/>
    /// holds or the timeout passes; returns the last answer and whether it matched.
    /// </summary>
    public static async Task<(T Value, bool Matched)> PollAsync<T>(
        Func<CancellationToken, Task<T>> read,
        Func<T, bool> done,
        TimeSpan timeout,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(read);
        ArgumentNullException.ThrowIfNull(done);
        var start = Stopwatch.GetTimestamp();
        while (true)
        {
            var value = await read(cancellationToken);
            if (done(value))
            {
                return (value, true);
            }

            if (Stopwatch.GetElapsedTime(start) >= timeout)
            {
                return (value, false);
            }

            await Task.Delay(s_pollInterval, cancellationToken);
        }
    }

    /// <summary>
    /// Waits until the answer to <paramref name="promQl"/> is exactly <paramref name="expected"/>: one sample per
    /// key, keyed by the value of <paramref name="label"/>, no other samples.
    /// </summary>
    public Task<IReadOnlyList<PrometheusSample>> WaitForValuesAsync(
        string promQl,
        string label,
        IReadOnlyDictionary<string, double> expected,
        TimeSpan timeout,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(expected);
        return WaitForQueryAsync(
            promQl,
            samples => samples.Count == expected.Count &&
                samples.All(s => expected.TryGetValue(s[label], out var value) && value == s.Value),
            timeout,
            cancellationToken);
    }

    /// <summary>Every metric name stored so far (<c>/api/v1/label/__name__/values</c>).</summary>
    public async Task<IReadOnlySet<string>> MetricNamesAsync(CancellationToken cancellationToken = default)
    {
        using var data = await GetDataAsync("api/v1/label/__name__/values", cancellationToken);
        return data.RootElement.EnumerateArray().Select(name => name.GetString() ?? "").ToHashSet(StringComparer.Ordinal);
    }

    /// <summary>Each active target's scrape URL, health and last error (<c>/api/v1/targets</c>), for diagnostics.</summary>
    public async Task<IReadOnlyList<string>> TargetsAsync(CancellationToken cancellationToken = default)
    {
        using var data = await GetDataAsync("api/v1/targets?state=active", cancellationToken);
        return [.. data.RootElement.GetProperty("activeTargets").EnumerateArray().Select(target =>
            $"{target.GetProperty("scrapeUrl").GetString()}: {target.GetProperty("health").GetString()}, last scrape {target.GetProperty("lastScrape").GetString()}" +
            (target.GetProperty("lastError").GetString() is { Length: > 0 } error ? ", error: " + error : ""))];
    }

    /// <summary>The loaded rules with their evaluation health (<c>/api/v1/rules</c>).</summary>
    public async Task<IReadOnlyList<PrometheusRule>> RulesAsync(CancellationToken cancellationToken = default)
    {
        using var data = await GetDataAsync("api/v1/rules", cancellationToken);
        var rules = new List<PrometheusRule>();
        foreach (var group in data.RootElement.GetProperty("groups").EnumerateArray())
        {
            var groupName = group.GetProperty("name").GetString() ?? "";
            foreach (var rule in group.GetProperty("rules").EnumerateArray())
            {
                rules.Add(new PrometheusRule(
                    groupName,
                    rule.GetProperty("name").GetString() ?? "",
                    rule.GetProperty("type").GetString() ?? "",
                    rule.GetProperty("health").GetString() ?? "",
                    rule.TryGetProperty("lastError", out var error) ? error.GetString() ?? "" : ""));
            }
        }

        return rules;
    }

    /// <summary>Waits until every target has been scraped successfully (<c>up == 1</c> for each).</summary>
    public Task WaitForTargetsUpAsync(TimeSpan timeout, CancellationToken cancellationToken = default) =>
        WaitForQueryAsync(
            $"up{{job=\"{JobName}\"}}",
            samples => samples.Count > 0 && samples.All(s => s.Value == 1),
            timeout,
            cancellationToken);

    /// <summary>Stops the server and deletes its directory.</summary>
    public async ValueTask DisposeAsync()
    {
        await _lifecycle.WaitAsync();
        try
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            await KillAsync();
            _http.Dispose();
            if (Environment.GetEnvironmentVariable("IMAPPROXY_KEEP_PROMETHEUS_DIRS") != "1")
            {
                try
                {
                    System.IO.Directory.Delete(DataDirectory, recursive: true);
                }
                catch (DirectoryNotFoundException)
                {
                    // Already gone: nothing to delete.
                }
            }
        }
        finally
        {
            _lifecycle.Release();
        }
    }

    public override string ToString() => $"Prometheus on {Address}";

    private static double ParseValue(JsonElement value) =>
        // [ <unix time>, "<value>" ]; the value is a string so that NaN and ±Inf survive JSON.
        double.Parse(value[1].GetString() ?? "NaN", NumberStyles.Float, CultureInfo.InvariantCulture);

    private static int PickFreePort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    /// <summary>The <c>data</c> of a successful API answer; throws with Prometheus's own error otherwise.</summary>
    private async Task<JsonDocument> GetDataAsync(string path, CancellationToken cancellationToken)
    {
        using var response = await _http.GetAsync(path, cancellationToken);
        var body = await response.Content.ReadAsStringAsync(cancellationToken);
        using var document = JsonDocument.Parse(body);
        var root = document.RootElement;
        if (!response.IsSuccessStatusCode || root.GetProperty("status").GetString() != "success")
        {
            var error = root.TryGetProperty("error", out var message) ? message.GetString() : body;
            throw new InvalidOperationException($"Prometheus GET /{path} failed ({(int)response.StatusCode}): {error}");
        }

        return JsonDocument.Parse(root.GetProperty("data").GetRawText());
    }

    private void WriteConfig(List<IPEndPoint> targets, List<string> ruleFiles)
    {
        var config = new StringBuilder();
        void Line(string text) => config.Append(text).Append('\n');

        Line("# Generated by ImapProxy.Testing for one test run. Not for production.");
        Line("global:");
        // One second: a test sees a change within about two scrapes; the timeout must not exceed the interval.
        Line("  scrape_interval: 1s");
        Line("  scrape_timeout: 1s");
        Line("  evaluation_interval: 1s");
        if (ruleFiles.Count > 0)
        {
            Line("rule_files:");
            foreach (var rules in ruleFiles)
            {
                Line("  - " + JsonSerializer.Serialize(rules));
            }
        }

        Line("scrape_configs:");
        Line($"  - job_name: {JobName}");
        Line("    metrics_path: /metrics");
        Line("    static_configs:");
        Line("      - targets:");
        foreach (var target in targets)
        {
            Line($"          - \"{target}\"");
        }

        File.WriteAllText(ConfigPath, config.ToString());
    }

    /// <summary>Starts the server; true once it is ready, false if it could not bind its port.</summary>
    private async Task<bool> LaunchAsync(CancellationToken cancellationToken)
    {
        lock (_output)
        {
            _output.Clear();
        }

        var startInfo = new ProcessStartInfo(PrometheusPath)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var argument in Arguments())
        {
            startInfo.ArgumentList.Add(argument);
        }

        var process = new Process { StartInfo = startInfo };
        process.OutputDataReceived += OnOutput;
        process.ErrorDataReceived += OnOutput;
        process.Start();
        _process = process;
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        try
        {
            if (await WaitUntilReadyAsync(process, cancellationToken))
            {
                return true;
            }
        }
        catch
        {
            await KillAsync();
            throw;
        }

        // The server exited during start-up.
        await KillAsync();
        var diagnostics = Diagnostics();
        if (diagnostics.Contains("address already in use", StringComparison.Ordinal))
        {
            return false;
        }

        throw new InvalidOperationException($"Prometheus exited during start-up.\n{diagnostics}");
    }

    private List<string> Arguments() =>
    [
        "--config.file=" + ConfigPath,
        "--storage.tsdb.path=" + Path.Combine(DataDirectory, "data"),
        "--web.listen-address=" + Address.Authority,
        "--log.level=warn",
    ];

    /// <summary>True once <c>/-/ready</c> answers 200; false if the server exits first.</summary>
    private async Task<bool> WaitUntilReadyAsync(Process process, CancellationToken cancellationToken)
    {
        var start = Stopwatch.GetTimestamp();
        var delay = TimeSpan.FromMilliseconds(20);
        while (true)
        {
            if (process.HasExited)
            {
                return false;
            }

            if (await IsReadyAsync(cancellationToken))
            {
                return true;
            }

            if (Stopwatch.GetElapsedTime(start) > s_startTimeout)
            {
                throw new TimeoutException($"Prometheus at {Address} was not ready within {s_startTimeout}.\n{Diagnostics()}");
            }

            await Task.Delay(delay, cancellationToken);
            delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 250));
        }
    }

    private async Task<bool> IsReadyAsync(CancellationToken cancellationToken)
    {
        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        attempt.CancelAfter(s_probeTimeout);
        try
        {
            // 503 while the TSDB opens and the rules load, 200 from then on.
            using var response = await _http.GetAsync("-/ready", attempt.Token);
            return response.StatusCode == HttpStatusCode.OK;
        }
        catch (HttpRequestException)
        {
            return false;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }

    private async Task KillAsync()
    {
        var process = _process;
        _process = null;
        if (process is not null)
        {
            try
            {
                process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // Already exited.
            }

            using (process)
            {
                using var timeout = new CancellationTokenSource(s_stopTimeout);
                try
                {
                    await process.WaitForExitAsync(timeout.Token);
                }
                catch (OperationCanceledException)
                {
                    throw new TimeoutException($"Prometheus (pid {process.Id}) did not exit within {s_stopTimeout}.");
                }
            }
        }

        // Belt and braces: nothing else may still run against this directory (and hold the TSDB lock).
        await s_instances.KillAllAsync(DataDirectory, s_stopTimeout);
    }

    private void OnOutput(object sender, DataReceivedEventArgs e)
    {
        if (e.Data is null)
        {
            return;
        }

        lock (_output)
        {
            if (_output.Length < MaxOutputChars)
            {
                _output.Append(e.Data).Append('\n');
            }
        }
    }

    private string Diagnostics()
    {
        string output;
        lock (_output)
        {
            output = _output.ToString();
        }

        string config;
        try
        {
            config = File.ReadAllText(ConfigPath);
        }
        catch (IOException)
        {
            config = "(unreadable)";
        }

        return $"Prometheus at {Address}, directory {DataDirectory}\nConfig:\n{config}\nPrometheus output:\n{output}";
    }
}
