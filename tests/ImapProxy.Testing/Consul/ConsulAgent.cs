using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using ImapProxy.Testing.Processes;

namespace ImapProxy.Testing.Consul;

/// <summary>
/// A real Consul agent (<c>consul agent -dev</c>, a single server that elects itself) for one test: its own
/// directory (data, log), free ports on 127.0.0.1, no DNS and no gRPC, run as a child process.
/// </summary>
/// <remarks>
/// Needs the consul binary (<c>scripts/install-deps.sh</c> installs 1.8.7 from Debian 11); no root. The
/// convenience methods are thin wrappers over the HTTP API and throw on any non-2xx answer. Consul runs a
/// check at most once a second (shorter intervals are raised to 1 s), so a TCP check notices a backend going
/// down or up within about a second.
/// </remarks>
public sealed class ConsulAgent : IAsyncDisposable
{
    private static readonly InstanceDirectories s_instances = new("imapproxy-consul", "consul");

    private const string ConsulPath = "/usr/bin/consul";
    private const int MaxPortAttempts = 5;
    private const int MaxOutputChars = 64 * 1024;

    private static readonly TimeSpan s_startTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan s_stopTimeout = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan s_probeTimeout = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan s_requestTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan s_minCheckInterval = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan s_maxCheckTimeout = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan s_maxBlockingWait = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan s_unreachableRetryDelay = TimeSpan.FromMilliseconds(100);

    private readonly SemaphoreSlim _lifecycle = new(1, 1);
    private readonly StringBuilder _output = new();
    private readonly HttpClient _http;
    private readonly string _nodeName;
    private readonly AgentPorts _ports;
    private Process? _process;
    private bool _disposed;

    private ConsulAgent(string directory, string nodeName, AgentPorts ports)
    {
        DataDirectory = directory;
        LogDirectory = Path.Combine(directory, "log");
        _nodeName = nodeName;
        _ports = ports;
        HttpAddress = new Uri(string.Create(CultureInfo.InvariantCulture, $"http://127.0.0.1:{ports.Http}"));
        _http = new HttpClient(new SocketsHttpHandler { ConnectTimeout = s_probeTimeout })
        {
            BaseAddress = HttpAddress,
            // Above the longest blocking wait this class asks for (s_maxBlockingWait plus Consul's jitter).
            Timeout = s_requestTimeout,
        };
    }

    /// <summary>The HTTP API, <c>http://127.0.0.1:&lt;port&gt;</c>; the same across <see cref="StartAgainAsync"/>.</summary>
    public Uri HttpAddress { get; }

    /// <summary>The agent's own directory (data dir, log files); deleted on dispose unless IMAPPROXY_KEEP_CONSUL_DIRS=1.</summary>
    public string DataDirectory { get; }

    /// <summary>Consul's log files (<c>-log-file</c>; 1.8 appends a timestamp to every file name).</summary>
    public string LogDirectory { get; }

    /// <summary>Whether the agent process is running.</summary>
    public bool IsRunning => _process is { HasExited: false };

    /// <summary>Starts an agent and returns once it has elected itself leader.</summary>
    public static async Task<ConsulAgent> StartAsync(CancellationToken cancellationToken = default)
    {
        if (!File.Exists(ConsulPath))
        {
            throw new InvalidOperationException($"{ConsulPath} not found: install Consul with scripts/install-deps.sh.");
        }

        await s_instances.PrepareAsync(cancellationToken);

        var id = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(5));
        var directory = Path.Combine(s_instances.RootDirectory, id);
        System.IO.Directory.CreateDirectory(directory);
        InstanceDirectories.WriteOwner(directory);
        for (var attempt = 1; ; attempt++)
        {
            // Another process may take a port between our probe and Consul's bind: pick again.
            var agent = new ConsulAgent(directory, "imapproxy-test-" + id, PickFreePorts());
            try
            {
                if (await agent.LaunchAsync(cancellationToken))
                {
                    return agent;
                }
            }
            catch
            {
                await agent.DisposeAsync();
                throw;
            }

            var diagnostics = agent.Diagnostics();
            if (attempt == MaxPortAttempts)
            {
                await agent.DisposeAsync();
                throw new InvalidOperationException($"Consul could not bind free ports on 127.0.0.1 in {MaxPortAttempts} attempts.\n{diagnostics}");
            }

            // Keep the directory (and its owner file) for the next attempt.
            agent._http.Dispose();
        }
    }

    /// <summary>Kills the agent (as a crash or a network partition would look to clients) and waits for it; idempotent.</summary>
    public async Task StopAsync()
    {
        await _lifecycle.WaitAsync();
        try
        {
            await KillAsync();
        }
        finally
        {
            _lifecycle.Release();
        }
    }

    /// <summary>
    /// Starts the agent again on the same ports (kills it first if it still runs) and returns once it is leader.
    /// </summary>
    /// <remarks>
    /// Dev mode keeps the Raft state in memory: KV, sessions and the catalog are lost, and every index starts
    /// again from a small number (a client must reset an index that goes backwards). Services and checks
    /// registered through this agent's API survive, as on a production agent: the agent persists them in its
    /// data dir and registers them again, each check critical until it first runs; they appear in
    /// <c>/v1/health/service</c> a moment after the agent is leader (use <see cref="WaitForHealthAsync"/>).
    /// </remarks>
    public async Task StartAgainAsync()
    {
        await _lifecycle.WaitAsync();
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            await KillAsync();
            for (var attempt = 1; ; attempt++)
            {
                if (await LaunchAsync(CancellationToken.None))
                {
                    return;
                }

                // Only a foreign process holding one of our ports gets here; give it a moment, then give up.
                if (attempt == MaxPortAttempts)
                {
                    throw new InvalidOperationException($"Consul could not bind its ports again ({_ports}).\n{Diagnostics()}");
                }

                await Task.Delay(TimeSpan.FromMilliseconds(200 * attempt));
            }
        }
        finally
        {
            _lifecycle.Release();
        }
    }

    /// <summary>Stops the agent and deletes its directory.</summary>
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
            if (Environment.GetEnvironmentVariable("IMAPPROXY_KEEP_CONSUL_DIRS") != "1")
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

    /// <summary>Sets a KV key to a UTF-8 value (<c>PUT /v1/kv/&lt;key&gt;</c>).</summary>
    public async Task PutKeyAsync(string key, string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        using var content = new ByteArrayContent(Encoding.UTF8.GetBytes(value));
        using var response = await _http.PutAsync(KeyPath(key), content);
        var body = await EnsureSuccessAsync(response, "PUT", KeyPath(key));
        if (body.Trim() != "true")
        {
            throw new InvalidOperationException($"Consul refused to set {key}: {body}");
        }
    }

    /// <summary>The value of a KV key as UTF-8 text, or null when the key does not exist.</summary>
    public async Task<string?> GetKeyAsync(string key)
    {
        using var response = await _http.GetAsync(KeyPath(key) + "?raw");
        if (response.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }

        return await EnsureSuccessAsync(response, "GET", KeyPath(key));
    }

    /// <summary>Deletes a KV key (<c>DELETE /v1/kv/&lt;key&gt;</c>); deleting a missing key succeeds.</summary>
    public async Task DeleteKeyAsync(string key)
    {
        using var response = await _http.DeleteAsync(KeyPath(key));
        await EnsureSuccessAsync(response, "DELETE", KeyPath(key));
    }

    /// <summary>
    /// Registers a service instance with this agent (<c>PUT /v1/agent/service/register</c>); registering the
    /// same id again replaces it. With <paramref name="tcpCheckInterval"/> the instance gets a TCP check
    /// against address:port (timeout 1 s or the interval if shorter) and starts critical until it first passes.
    /// </summary>
    /// <param name="tcpCheckInterval">At least 1 s: Consul silently raises shorter intervals to 1 s.</param>
    public async Task RegisterServiceAsync(
        string name,
        string id,
        string address,
        int port,
        IReadOnlyDictionary<string, string>? meta = null,
        string[]? tags = null,
        TimeSpan? tcpCheckInterval = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentException.ThrowIfNullOrEmpty(id);
        ArgumentException.ThrowIfNullOrEmpty(address);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(port);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(port, IPEndPoint.MaxPort);
        var service = new JsonObject
        {
            ["ID"] = id,
            ["Name"] = name,
            ["Address"] = address,
            ["Port"] = port,
        };
        if (tags is not null)
        {
            service["Tags"] = new JsonArray([.. tags.Select(tag => JsonValue.Create(tag))]);
        }

        if (meta is not null)
        {
            var metaObject = new JsonObject();
            foreach (var (key, value) in meta)
            {
                metaObject[key] = value;
            }

            service["Meta"] = metaObject;
        }

        if (tcpCheckInterval is { } interval)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(interval, s_minCheckInterval, nameof(tcpCheckInterval));
            var target = IPAddress.TryParse(address, out var ip) && ip.AddressFamily == AddressFamily.InterNetworkV6
                ? $"[{address}]:{port.ToString(CultureInfo.InvariantCulture)}"
                : $"{address}:{port.ToString(CultureInfo.InvariantCulture)}";
            service["Check"] = new JsonObject
            {
                ["Name"] = "TCP " + target,
                ["TCP"] = target,
                ["Interval"] = GoDuration(interval),
                ["Timeout"] = GoDuration(interval < s_maxCheckTimeout ? interval : s_maxCheckTimeout),
            };
        }

        using var content = new StringContent(service.ToJsonString(), Encoding.UTF8, "application/json");
        using var response = await _http.PutAsync("v1/agent/service/register", content);
        await EnsureSuccessAsync(response, "PUT", "v1/agent/service/register");
    }

    /// <summary>
    /// Removes a service instance and its checks from this agent (<c>PUT /v1/agent/service/deregister/&lt;id&gt;</c>);
    /// Consul 1.8 answers 200 for an unknown id too.
    /// </summary>
    public async Task DeregisterServiceAsync(string id)
    {
        ArgumentException.ThrowIfNullOrEmpty(id);
        var path = "v1/agent/service/deregister/" + Uri.EscapeDataString(id);
        using var content = new ByteArrayContent([]);
        using var response = await _http.PutAsync(path, content);
        await EnsureSuccessAsync(response, "PUT", path);
    }

    /// <summary>
    /// Waits until the instance <paramref name="serviceId"/> of <paramref name="serviceName"/> has the aggregated
    /// check status <paramref name="status"/> in <c>/v1/health/service/&lt;name&gt;</c>: critical if any of its
    /// checks (the node's serfHealth included) is critical or in maintenance, else warning if any is, else
    /// passing. Uses blocking queries, so it returns as soon as Consul sees the change; an unreachable agent is
    /// retried until the timeout.
    /// </summary>
    /// <param name="status"><c>passing</c>, <c>warning</c> or <c>critical</c>.</param>
    /// <exception cref="TimeoutException">Not reached within <paramref name="timeout"/>; the message has the last status seen.</exception>
    public async Task WaitForHealthAsync(string serviceName, string serviceId, string status, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(serviceName);
        ArgumentException.ThrowIfNullOrEmpty(serviceId);
        if (status is not ("passing" or "warning" or "critical"))
        {
            throw new ArgumentException($"status must be passing, warning or critical, not '{status}'.", nameof(status));
        }

        var path = "v1/health/service/" + Uri.EscapeDataString(serviceName);
        var start = Stopwatch.GetTimestamp();
        ulong index = 0;
        var lastSeen = "no answer yet";
        while (true)
        {
            var remaining = timeout - Stopwatch.GetElapsedTime(start);
            if (remaining <= TimeSpan.Zero)
            {
                throw new TimeoutException(
                    $"Consul: {serviceName}/{serviceId} did not become {status} within {timeout}; last seen: {lastSeen}.");
            }

            var wait = remaining < s_maxBlockingWait ? remaining : s_maxBlockingWait;
            var query = index == 0 ? path : string.Create(CultureInfo.InvariantCulture, $"{path}?index={index}&wait={GoDuration(wait)}");
            try
            {
                using var response = await _http.GetAsync(query, cancellationToken);
                var body = await EnsureSuccessAsync(response, "GET", path);
                var observed = AggregatedStatus(body, serviceId);
                if (observed == status)
                {
                    return;
                }

                lastSeen = observed ?? "instance not registered";
                // Blocking-query rules: start over when the index goes backwards (a restarted dev agent
                // counts from 1 again); otherwise block on the index just returned.
                var next = ReadIndex(response);
                index = next < index ? 0 : Math.Max(next, 1);
            }
            catch (Exception exception) when (
                !cancellationToken.IsCancellationRequested &&
                exception is HttpRequestException { StatusCode: null or >= HttpStatusCode.InternalServerError } or TaskCanceledException)
            {
                // Agent stopped, restarting or without a leader yet: poll again shortly, with a fresh index.
                lastSeen = "agent unreachable: " + exception.Message;
                index = 0;
                await Task.Delay(s_unreachableRetryDelay, cancellationToken);
            }
        }
    }

    public override string ToString() => $"Consul agent {_nodeName} at {HttpAddress}";

    private static string KeyPath(string key)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        return "v1/kv/" + string.Join('/', key.Split('/').Select(Uri.EscapeDataString));
    }

    // Go's time.ParseDuration format; whole milliseconds, rounded up so a wait is never 0.
    private static string GoDuration(TimeSpan duration) =>
        string.Create(CultureInfo.InvariantCulture, $"{(long)Math.Ceiling(duration.TotalMilliseconds)}ms");

    private static ulong ReadIndex(HttpResponseMessage response) =>
        response.Headers.TryGetValues("X-Consul-Index", out var values) &&
        ulong.TryParse(values.FirstOrDefault(), NumberStyles.None, CultureInfo.InvariantCulture, out var index)
            ? index
            : 0;

    private static string? AggregatedStatus(string body, string serviceId)
    {
        using var document = JsonDocument.Parse(body);
        foreach (var entry in document.RootElement.EnumerateArray())
        {
            if (entry.GetProperty("Service").GetProperty("ID").GetString() != serviceId)
            {
                continue;
            }

            var aggregated = "passing";
            foreach (var check in entry.GetProperty("Checks").EnumerateArray())
            {
                var checkStatus = check.GetProperty("Status").GetString();
                if (checkStatus is "critical" or "maintenance")
                {
                    return "critical";
                }

                if (checkStatus == "warning")
                {
                    aggregated = "warning";
                }
            }

            return aggregated;
        }

        return null;
    }

    private static async Task<string> EnsureSuccessAsync(HttpResponseMessage response, string method, string path)
    {
        var body = await response.Content.ReadAsStringAsync();
        if (!response.IsSuccessStatusCode)
        {
            throw new HttpRequestException(
                $"Consul {method} /{path} answered {(int)response.StatusCode} {response.ReasonPhrase}: {body.Trim()}",
                inner: null,
                response.StatusCode);
        }

        return body;
    }

    private static AgentPorts PickFreePorts()
    {
        // Serf gossips over TCP and UDP on the same port: both must be free. Hold every probe socket until
        // all are bound, so the ports are distinct.
        var sockets = new List<Socket>();
        try
        {
            int Bind(bool alsoUdp)
            {
                while (true)
                {
                    var tcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    sockets.Add(tcp);
                    tcp.Bind(new IPEndPoint(IPAddress.Loopback, 0));
                    var port = ((IPEndPoint)tcp.LocalEndPoint!).Port;
                    if (!alsoUdp)
                    {
                        return port;
                    }

                    var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
                    sockets.Add(udp);
                    try
                    {
                        udp.Bind(new IPEndPoint(IPAddress.Loopback, port));
                        return port;
                    }
                    catch (SocketException)
                    {
                        // That UDP port is taken: keep the TCP probe bound (so it is not offered again) and retry.
                    }
                }
            }

            return new AgentPorts(Http: Bind(alsoUdp: false), SerfLan: Bind(alsoUdp: true), SerfWan: Bind(alsoUdp: true), Server: Bind(alsoUdp: false));
        }
        finally
        {
            foreach (var socket in sockets)
            {
                socket.Dispose();
            }
        }
    }

    /// <summary>Starts the agent; true once it is leader, false if it could not bind its ports.</summary>
    private async Task<bool> LaunchAsync(CancellationToken cancellationToken)
    {
        lock (_output)
        {
            _output.Clear();
        }

        System.IO.Directory.CreateDirectory(LogDirectory);
        var startInfo = new ProcessStartInfo(ConsulPath)
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
            if (await WaitUntilLeaderAsync(process, cancellationToken))
            {
                return true;
            }
        }
        catch
        {
            await KillAsync();
            throw;
        }

        // The agent exited during start-up.
        await KillAsync();
        var diagnostics = Diagnostics();
        if (diagnostics.Contains("address already in use", StringComparison.Ordinal))
        {
            return false;
        }

        throw new InvalidOperationException($"Consul exited during start-up.\n{diagnostics}");
    }

    private List<string> Arguments()
    {
        string Port(int port) => port.ToString(CultureInfo.InvariantCulture);
        return
        [
            "agent", "-dev",
            "-node", _nodeName,
            "-bind", "127.0.0.1",
            "-client", "127.0.0.1",
            "-http-port", Port(_ports.Http),
            "-dns-port", "-1",
            "-grpc-port", "-1",
            "-serf-lan-port", Port(_ports.SerfLan),
            "-serf-wan-port", Port(_ports.SerfWan),
            "-server-port", Port(_ports.Server),
            "-data-dir", Path.Combine(DataDirectory, "data"),
            "-log-file", Path.Combine(LogDirectory, "consul.log"),
            "-log-level", "warn",
            // Dev mode already skips HashiCorp's update check; say so anyway, only loopback is reachable.
            "-hcl", "disable_update_check = true",
        ];
    }

    /// <summary>True once <c>/v1/status/leader</c> names a leader; false if the agent exits first.</summary>
    private async Task<bool> WaitUntilLeaderAsync(Process process, CancellationToken cancellationToken)
    {
        var start = Stopwatch.GetTimestamp();
        var delay = TimeSpan.FromMilliseconds(20);
        while (true)
        {
            if (process.HasExited)
            {
                return false;
            }

            if (await HasLeaderAsync(cancellationToken))
            {
                return true;
            }

            if (Stopwatch.GetElapsedTime(start) > s_startTimeout)
            {
                throw new TimeoutException($"Consul at {HttpAddress} had no leader within {s_startTimeout}.\n{Diagnostics()}");
            }

            await Task.Delay(delay, cancellationToken);
            delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 250));
        }
    }

    private async Task<bool> HasLeaderAsync(CancellationToken cancellationToken)
    {
        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        attempt.CancelAfter(s_probeTimeout);
        try
        {
            using var response = await _http.GetAsync("v1/status/leader", attempt.Token);
            if (!response.IsSuccessStatusCode)
            {
                return false;
            }

            // A JSON string: "" until the election is won, then "127.0.0.1:<server port>".
            var body = await response.Content.ReadAsStringAsync(attempt.Token);
            return JsonSerializer.Deserialize<string>(body) is { Length: > 0 };
        }
        catch (Exception exception) when (exception is HttpRequestException or JsonException)
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
                    throw new TimeoutException($"Consul {_nodeName} (pid {process.Id}) did not exit within {s_stopTimeout}.");
                }
            }
        }

        // Belt and braces: nothing else may still run against this directory (and hold our ports).
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

        return $"Consul {_nodeName}, ports {_ports}, directory {DataDirectory}\nConsul output:\n{output}";
    }

    private readonly record struct AgentPorts(int Http, int SerfLan, int SerfWan, int Server);
}
