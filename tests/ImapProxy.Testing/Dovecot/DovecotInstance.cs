using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using ImapProxy.Testing.Processes;

namespace ImapProxy.Testing.Dovecot;

/// <summary>
/// A real Dovecot IMAP server for one test: its own directory (config, sockets, state, log, Maildirs), its
/// own instance name and free ports on a loopback address, run in the foreground as a child process.
/// </summary>
/// <remarks>
/// Needs root (Dovecot's master switches each mail process to the <c>imapproxy-mail</c> system user, created
/// on first use) and Dovecot installed (<c>scripts/install-deps.sh</c>). Failed logins are answered after at
/// most 0.5 s (<c>auth_failure_delay = 0</c> leaves only the auth process's flush tick) and the per-address
/// auth penalty is off unless <see cref="DovecotOptions.AuthPenalty"/> is set.
/// </remarks>
public sealed class DovecotInstance : IAsyncDisposable
{
    private const string DovecotPath = "/usr/sbin/dovecot";
    private const int MaxPortAttempts = 5;
    private const int MaxOutputChars = 64 * 1024;

    private static readonly TimeSpan s_probeTimeout = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan s_stopTimeout = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan s_logPollInterval = TimeSpan.FromMilliseconds(50);

    private readonly DovecotOptions _options;
    private readonly IPAddress _address;
    private readonly SemaphoreSlim _lifecycle = new(1, 1);
    private readonly StringBuilder _output = new();
    private Process? _process;
    private bool _disposed;

    private DovecotInstance(DovecotOptions options, IPAddress address, string directory, string instanceName)
    {
        _options = options;
        _address = address;
        DataDirectory = directory;
        InstanceName = instanceName;
        ConfigPath = Path.Combine(directory, "dovecot.conf");
        LogPath = Path.Combine(directory, "dovecot.log");
    }

    /// <summary>The listen address.</summary>
    public string Address => _options.ListenAddress;

    /// <summary>The plain IMAP port (STARTTLS too when a certificate is configured).</summary>
    public int Port { get; private set; }

    /// <summary>The implicit-TLS port, when a certificate is configured.</summary>
    public int? ImapsPort { get; private set; }

    /// <summary>The plain IMAP endpoint.</summary>
    public IPEndPoint EndPoint => new(_address, Port);

    public IReadOnlyList<DovecotUser> Users => _options.Users;

    /// <summary>Dovecot's log (log_path): logins, ID fields, disconnections, auth failures.</summary>
    public string LogPath { get; }

    public string ConfigPath { get; }

    /// <summary>The instance's own directory; deleted on dispose unless IMAPPROXY_KEEP_DOVECOT_DIRS=1.</summary>
    public string DataDirectory { get; }

    /// <summary>Dovecot's instance_name; every process title starts with "dovecot-" followed by it.</summary>
    public string InstanceName { get; }

    /// <summary>Whether the master process is running.</summary>
    public bool IsRunning => _process is { HasExited: false };

    /// <summary>Starts an instance and returns once its plain port answers <c>* OK</c>.</summary>
    public static async Task<DovecotInstance> StartAsync(DovecotOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new DovecotOptions();
        var address = Validate(options);
        if (!Environment.IsPrivilegedProcess)
        {
            throw new InvalidOperationException(
                "DovecotInstance needs root: Dovecot's master must switch each mail process to the " + DovecotHost.MailUser + " user.");
        }

        if (!File.Exists(DovecotPath))
        {
            throw new InvalidOperationException($"{DovecotPath} not found: install Dovecot with scripts/install-deps.sh.");
        }

        await DovecotHost.PrepareAsync(cancellationToken);

        var id = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(5));
        var directory = Path.Combine(DovecotHost.RootDirectory, id);
        var instance = new DovecotInstance(options, address, directory, DovecotHost.InstancePrefix + id);
        try
        {
            DovecotHost.CreateTraversableDirectory(directory);
            InstanceDirectories.WriteOwner(directory);
            await instance.CreateFilesAsync(cancellationToken);
            for (var attempt = 1; ; attempt++)
            {
                // Another process may take a port between our probe and Dovecot's bind: pick again.
                var ports = PickFreePorts(address, instance.TlsEnabled ? 2 : 1);
                instance.Port = ports[0];
                instance.ImapsPort = instance.TlsEnabled ? ports[1] : null;
                instance.WriteConfig();
                if (await instance.LaunchAsync(cancellationToken))
                {
                    return instance;
                }

                if (attempt == MaxPortAttempts)
                {
                    throw new InvalidOperationException(
                        $"Dovecot could not bind a free port on {address} in {MaxPortAttempts} attempts.\n{instance.Diagnostics()}");
                }
            }
        }
        catch
        {
            await instance.DisposeAsync();
            throw;
        }
    }

    /// <summary>The whole log so far.</summary>
    public string ReadLog()
    {
        try
        {
            using var stream = new FileStream(LogPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var reader = new StreamReader(stream, Encoding.UTF8);
            return reader.ReadToEnd();
        }
        catch (Exception exception) when (exception is FileNotFoundException or DirectoryNotFoundException)
        {
            return "";
        }
    }

    /// <summary>Polls the log until <paramref name="predicate"/> holds for its whole text; returns that text.</summary>
    /// <exception cref="TimeoutException">The predicate did not hold within <paramref name="timeout"/>.</exception>
    public async Task<string> WaitForLogAsync(Func<string, bool> predicate, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(predicate);
        var start = Stopwatch.GetTimestamp();
        while (true)
        {
            var log = ReadLog();
            if (predicate(log))
            {
                return log;
            }

            if (Stopwatch.GetElapsedTime(start) >= timeout)
            {
                throw new TimeoutException($"Dovecot {InstanceName}: the log did not match within {timeout}.\n{Tail(log)}");
            }

            await Task.Delay(s_logPollInterval, cancellationToken);
        }
    }

    /// <summary>Kills the instance's whole process tree (as a crash would) and waits for it; idempotent.</summary>
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

    /// <summary>Stops the instance and starts it again on the same address and ports, keeping the mail.</summary>
    public async Task RestartAsync()
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

                // Only a foreign process holding our port gets here; give it a moment, then give up.
                if (attempt == MaxPortAttempts)
                {
                    throw new InvalidOperationException($"Dovecot could not bind {Address}:{Port} again on restart.\n{Diagnostics()}");
                }

                await Task.Delay(TimeSpan.FromMilliseconds(200 * attempt));
            }
        }
        finally
        {
            _lifecycle.Release();
        }
    }

    /// <summary>Stops the instance and deletes its directory.</summary>
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
            if (Environment.GetEnvironmentVariable("IMAPPROXY_KEEP_DOVECOT_DIRS") != "1")
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

    public override string ToString() => $"Dovecot {InstanceName} on {Address}:{Port}";

    private bool TlsEnabled => _options.CertificatePemPath is not null;

    private static IPAddress Validate(DovecotOptions options)
    {
        if (!IPAddress.TryParse(options.ListenAddress, out var address) ||
            address.AddressFamily != AddressFamily.InterNetwork ||
            !IPAddress.IsLoopback(address))
        {
            throw new ArgumentException($"ListenAddress must be an IPv4 loopback address (127.x.y.z), not '{options.ListenAddress}'.", nameof(options));
        }

        if ((options.CertificatePemPath is null) != (options.KeyPemPath is null))
        {
            throw new ArgumentException("Set both CertificatePemPath and KeyPemPath, or neither.", nameof(options));
        }

        foreach (var path in new[] { options.CertificatePemPath, options.KeyPemPath })
        {
            if (path is not null && !File.Exists(path))
            {
                throw new ArgumentException($"TLS file not found: {path}", nameof(options));
            }
        }

        ArgumentOutOfRangeException.ThrowIfNegative(options.SeedMessagesPerUser, nameof(options));
        ArgumentNullException.ThrowIfNull(options.Users, nameof(options));
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var user in options.Users)
        {
            if (user.Name.Length == 0 || !user.Name.All(IsUserNameChar) || user.Name is "." or "..")
            {
                throw new ArgumentException($"User name '{user.Name}' must be letters, digits and . - _ @ only.", nameof(options));
            }

            if (user.Password.AsSpan().IndexOfAny(":\r\n\0") >= 0)
            {
                throw new ArgumentException($"The password of '{user.Name}' must not contain ':', CR, LF or NUL (passwd-file separators).", nameof(options));
            }

            if (!names.Add(user.Name))
            {
                throw new ArgumentException($"User '{user.Name}' is listed twice.", nameof(options));
            }
        }

        return address;
    }

    // Dovecot's default auth_username_chars.
    private static bool IsUserNameChar(char c) => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_' or '@';

    private static int[] PickFreePorts(IPAddress address, int count)
    {
        // Hold every probe socket until all are bound, so the ports are distinct.
        var sockets = new List<Socket>(count);
        try
        {
            var ports = new int[count];
            for (var i = 0; i < count; i++)
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                sockets.Add(socket);
                socket.Bind(new IPEndPoint(address, 0));
                ports[i] = ((IPEndPoint)socket.LocalEndPoint!).Port;
            }

            return ports;
        }
        finally
        {
            foreach (var socket in sockets)
            {
                socket.Dispose();
            }
        }
    }

    private async Task CreateFilesAsync(CancellationToken cancellationToken)
    {
        foreach (var name in new[] { "run", "state", "mail" })
        {
            DovecotHost.CreateTraversableDirectory(Path.Combine(DataDirectory, name));
        }

        // The auth process runs as the dovecot user and reads the passwd-file itself.
        var usersPath = Path.Combine(DataDirectory, "users");
        var users = new StringBuilder();
        foreach (var user in _options.Users)
        {
            users.Append(user.Name).Append(":{PLAIN}").Append(user.Password).Append('\n');
        }

        File.WriteAllText(usersPath, users.ToString(), new UTF8Encoding(encoderShouldEmitUTF8Identifier: false));
        DovecotHost.SetUnixFileMode(usersPath, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead);
        await ToolRunner.RunCheckedAsync("chown", ["root:dovecot", usersPath], cancellationToken);

        var mailRoot = Path.Combine(DataDirectory, "mail");
        var now = DateTimeOffset.UtcNow;
        foreach (var user in _options.Users)
        {
            var maildir = Path.Combine(mailRoot, user.Name, "Maildir");
            foreach (var sub in new[] { "cur", "new", "tmp" })
            {
                System.IO.Directory.CreateDirectory(Path.Combine(maildir, sub));
            }

            for (var i = 1; i <= _options.SeedMessagesPerUser; i++)
            {
                // Maildir/cur names are "unique:2,flags"; Dovecot assigns UIDs in name order on first access.
                var fileName = string.Create(CultureInfo.InvariantCulture, $"{now.ToUnixTimeSeconds()}.M{i:D4}P{Environment.ProcessId}.imapproxy-seed:2,");
                File.WriteAllText(Path.Combine(maildir, "cur", fileName), SeedMessage(user.Name, i, now.AddSeconds(i)));
            }
        }

        await ToolRunner.RunCheckedAsync("chown", ["-R", $"{DovecotHost.MailUser}:{DovecotHost.MailUser}", mailRoot], cancellationToken);
    }

    private static string SeedMessage(string user, int number, DateTimeOffset date) =>
        string.Create(
            CultureInfo.InvariantCulture,
            $"""
            From: Seed <seed@example.test>
            To: {user} <{user}@example.test>
            Subject: Seed message {number} for {user}
            Date: {date.ToString("ddd, dd MMM yyyy HH:mm:ss", CultureInfo.InvariantCulture)} +0000
            Message-ID: <seed-{number}-{user}@example.test>
            MIME-Version: 1.0
            Content-Type: text/plain; charset=us-ascii

            This is seed message {number} for {user}.

            """);

    private void WriteConfig()
    {
        var config = new StringBuilder();
        void Line(string text) => config.Append(text).Append('\n');

        Line("# Generated by ImapProxy.Testing for a throwaway test backend. Not for production.");
        Line($"instance_name = {InstanceName}");
        Line($"base_dir = {DataDirectory}/run");
        Line($"state_dir = {DataDirectory}/state");
        Line($"log_path = {LogPath}");
        Line("protocols = imap");
        Line($"listen = {Address}");
        if (TlsEnabled)
        {
            Line("ssl = yes");
            Line($"ssl_cert = <{_options.CertificatePemPath}");
            Line($"ssl_key = <{_options.KeyPemPath}");
        }
        else
        {
            Line("ssl = no");
        }

        Line("disable_plaintext_auth = no");
        Line("auth_mechanisms = plain login");
        if (_options.LoginTrustedLoopback)
        {
            Line("login_trusted_networks = 127.0.0.0/8");
        }

        Line("verbose_proctitle = yes");
        Line("auth_verbose = yes");
        Line("auth_verbose_passwords = no");
        Line("auth_debug = no");
        Line("auth_debug_passwords = no");
        Line("log_debug =");
        // Logs every ID field a client sends: x-session-id, x-originating-ip, ... forwarded by the proxy.
        Line("imap_id_log = *");
        Line("mail_location = maildir:~/Maildir");
        Line("mail_max_userip_connections = 1000");
        Line("first_valid_uid = 1");
        Line("first_valid_gid = 1");
        // Failed logins: answered at the auth process's next 0.5 s flush instead of after 2 s.
        Line("auth_failure_delay = 0");
        if (!_options.AuthPenalty)
        {
            // No listener, no socket: the auth process then runs without penalty tracking (anvil's
            // 2, 4, 8, 15 s per client address, which login_trusted_networks does not lift in 2.3).
            Line("service anvil {");
            Line("  unix_listener anvil-auth-penalty {");
            Line("    mode = 0");
            Line("  }");
            Line("}");
        }

        Line("passdb {");
        Line("  driver = passwd-file");
        Line($"  args = scheme=PLAIN username_format=%u {DataDirectory}/users");
        Line("}");
        Line("userdb {");
        Line("  driver = static");
        Line($"  args = uid={DovecotHost.MailUser} gid={DovecotHost.MailUser} home={DataDirectory}/mail/%u");
        Line("}");
        Line("service imap-login {");
        Line("  inet_listener imap {");
        Line($"    address = {Address}");
        Line(string.Create(CultureInfo.InvariantCulture, $"    port = {Port}"));
        Line("  }");
        Line("  inet_listener imaps {");
        Line($"    address = {Address}");
        Line(string.Create(CultureInfo.InvariantCulture, $"    port = {ImapsPort ?? 0}"));
        Line("  }");
        Line("}");
        Line("service imap {");
        Line("  process_limit = 1024");
        Line("}");
        if (_options.ExtraConfig is { } extra)
        {
            Line(extra);
        }

        File.WriteAllText(ConfigPath, config.ToString());
        DovecotHost.SetUnixFileMode(ConfigPath, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
    }

    /// <summary>Starts the master; true once it greets, false if it could not bind its ports.</summary>
    private async Task<bool> LaunchAsync(CancellationToken cancellationToken)
    {
        // A killed master leaves its pid file (a reused pid would make Dovecot think it still runs) and its
        // sockets; a stale anvil-auth-penalty socket would make the auth process retry connecting for 5 s.
        File.Delete(Path.Combine(DataDirectory, "run", "master.pid"));
        File.Delete(Path.Combine(DataDirectory, "run", "anvil-auth-penalty"));
        lock (_output)
        {
            _output.Clear();
        }

        var startInfo = new ProcessStartInfo(DovecotPath)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        startInfo.ArgumentList.Add("-F");
        startInfo.ArgumentList.Add("-c");
        startInfo.ArgumentList.Add(ConfigPath);
        var process = new Process { StartInfo = startInfo };
        process.OutputDataReceived += OnOutput;
        process.ErrorDataReceived += OnOutput;
        process.Start();
        _process = process;
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        try
        {
            if (await WaitUntilGreetingAsync(process, cancellationToken))
            {
                return true;
            }
        }
        catch
        {
            await KillAsync();
            throw;
        }

        // The master exited during start-up.
        await KillAsync();
        var diagnostics = Diagnostics();
        if (diagnostics.Contains("Address already in use", StringComparison.Ordinal))
        {
            return false;
        }

        throw new InvalidOperationException($"Dovecot exited during start-up.\n{diagnostics}");
    }

    /// <summary>True once the plain port answers <c>* OK</c>; false if the master exits first.</summary>
    private async Task<bool> WaitUntilGreetingAsync(Process process, CancellationToken cancellationToken)
    {
        var start = Stopwatch.GetTimestamp();
        var delay = TimeSpan.FromMilliseconds(10);
        while (true)
        {
            if (process.HasExited)
            {
                return false;
            }

            if (await TryReadGreetingAsync(cancellationToken))
            {
                return true;
            }

            if (Stopwatch.GetElapsedTime(start) > _options.StartTimeout)
            {
                throw new TimeoutException($"Dovecot did not greet on {Address}:{Port} within {_options.StartTimeout}.\n{Diagnostics()}");
            }

            await Task.Delay(delay, cancellationToken);
            delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 250));
        }
    }

    private async Task<bool> TryReadGreetingAsync(CancellationToken cancellationToken)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        attempt.CancelAfter(s_probeTimeout);
        try
        {
            await socket.ConnectAsync(EndPoint, attempt.Token);
            var buffer = new byte[512];
            var filled = 0;
            while (filled < buffer.Length)
            {
                var read = await socket.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None, attempt.Token);
                if (read == 0)
                {
                    return false;
                }

                filled += read;
                var end = buffer.AsSpan(0, filled).IndexOf((byte)'\n');
                if (end >= 0)
                {
                    return buffer.AsSpan(0, end).StartsWith("* OK "u8);
                }
            }

            return false;
        }
        catch (SocketException)
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
        }

        // Children whose master died on its own were re-parented and escape the tree walk: sweep by name.
        await DovecotHost.Instances.KillAllAsync(DataDirectory, s_stopTimeout);
        if (process is not null)
        {
            using (process)
            {
                using var timeout = new CancellationTokenSource(s_stopTimeout);
                try
                {
                    await process.WaitForExitAsync(timeout.Token);
                }
                catch (OperationCanceledException)
                {
                    throw new TimeoutException($"Dovecot {InstanceName} (pid {process.Id}) did not exit within {s_stopTimeout}.");
                }
            }
        }
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

        return $"Config: {ConfigPath}\nDovecot output:\n{output}\nLog ({LogPath}):\n{Tail(ReadLog())}";
    }

    private static string Tail(string log)
    {
        const int MaxLines = 60;
        var lines = log.Split('\n');
        return lines.Length <= MaxLines ? log : string.Join('\n', lines[^MaxLines..]);
    }
}
