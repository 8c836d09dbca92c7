using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace ImapProxy.Testing.Proxy;

/// <summary>
/// The proxy as its own process (`dotnet ImapProxy.dll --config file`), for what only a process shows: signals,
/// exit codes. Ports are chosen free before the start. Output is captured; the process is killed on dispose if
/// it is still running.
/// </summary>
public sealed class ProxyProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly TaskCompletionSource _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private ProxyProcess(Process process, IPEndPoint imaps, IPEndPoint admin)
    {
        _process = process;
        Imaps = imaps;
        Admin = admin;
    }

    public IPEndPoint Imaps { get; }

    public IPEndPoint Admin { get; }

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    /// <summary>Starts the proxy with an implicit-TLS listener and the admin endpoint; waits until /readyz says ready.</summary>
    public static async Task<ProxyProcess> StartAsync(string directory, string certificatePath, string keyPath, IReadOnlyList<ProxyBackend> backends, IDictionary<string, object>? session = null)
    {
        var imaps = new IPEndPoint(IPAddress.Loopback, FreePort());
        var admin = new IPEndPoint(IPAddress.Loopback, FreePort());
        var config = new Dictionary<string, object>
        {
            ["ImapProxy"] = new Dictionary<string, object>
            {
                ["Listeners"] = new[] { new { Name = "imaps", Address = "127.0.0.1", Port = imaps.Port, Tls = "Implicit" } },
                ["Tls"] = new { CertificateFile = certificatePath, KeyFile = keyPath },
                ["Admin"] = new { Address = "127.0.0.1", Port = admin.Port },
                ["Backends"] = new { Static = backends.Select(b => new { b.Id, b.Host, b.Port, b.Weight }).ToArray() },
                ["Session"] = session ?? new Dictionary<string, object>(),
            },
        };
        var configPath = Path.Combine(directory, "imapproxy.json");
        await File.WriteAllTextAsync(configPath, JsonSerializer.Serialize(config));

        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(ProxyAssemblyPath());
        info.ArgumentList.Add("--config");
        info.ArgumentList.Add(configPath);
        info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        var process = new Process { StartInfo = info, EnableRaisingEvents = true };
        var proxy = new ProxyProcess(process, imaps, admin);
        process.OutputDataReceived += (_, e) => proxy.Append(e.Data);
        process.ErrorDataReceived += (_, e) => proxy.Append(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        // Not the Exited event: it can come before the last lines of output were read. WaitForExitAsync also waits
        // for the end of both redirected streams, so Output is complete once Exited is.
        _ = process.WaitForExitAsync().ContinueWith(_ => proxy._exited.TrySetResult(), TaskScheduler.Default);
        await proxy.WaitUntilReadyAsync();
        return proxy;
    }

    public int ExitCode => _process.ExitCode;

    public bool HasExited => _exited.Task.IsCompleted;

    public Task Exited => _exited.Task;

    /// <summary>Sends SIGTERM, as Kubernetes does (through kill(1): no unsafe code in the test helpers).</summary>
    public void Terminate()
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]) { UseShellExecute = false })
            ?? throw new InvalidOperationException("kill could not be started");
        kill.WaitForExit();
        if (kill.ExitCode != 0)
        {
            throw new InvalidOperationException($"kill -TERM {_process.Id} failed with {kill.ExitCode}");
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _exited.Task.WaitAsync(TimeSpan.FromSeconds(30));
        }

        _process.Dispose();
    }

    /// <summary>The built proxy next to this test build: src/ImapProxy/bin/&lt;configuration&gt;/net10.0/ImapProxy.dll.</summary>
    private static string ProxyAssemblyPath()
    {
        var here = AppContext.BaseDirectory;
        var configuration = here.Contains("/Release/", StringComparison.Ordinal) ? "Release" : "Debug";
        var directory = new DirectoryInfo(here);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "ImapProxy.sln")))
        {
            directory = directory.Parent;
        }

        var path = Path.Combine(directory?.FullName ?? throw new InvalidOperationException("ImapProxy.sln not found above " + here), "src", "ImapProxy", "bin", configuration, "net10.0", "ImapProxy.dll");
        return File.Exists(path) ? path : throw new FileNotFoundException("Build the proxy first.", path);
    }

    private static int FreePort()
    {
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    private async Task WaitUntilReadyAsync()
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            if (HasExited)
            {
                throw new InvalidOperationException($"The proxy exited with {ExitCode} during start-up:\n{Output}");
            }

            try
            {
                var response = await http.GetAsync(new Uri($"http://{Admin}/readyz"));
                if (response.IsSuccessStatusCode)
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
                // Not listening yet.
            }

            await Task.WhenAny(_exited.Task, Task.Delay(100));
        }

        throw new TimeoutException($"The proxy did not become ready:\n{Output}");
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
        }
    }
}
