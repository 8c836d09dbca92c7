using System.Diagnostics;
using System.Globalization;

namespace ImapProxy.Testing.Processes;

/// <summary>
/// The directories of one kind of external test server (Consul agents, Prometheus servers, Dovecot instances)
/// under a common root, and the removal of servers left running by test processes that died. A server's
/// processes are found in /proc by their command lines, which name the instance's directory.
/// </summary>
internal sealed class InstanceDirectories
{
    private const string OwnerFileName = "owner";

    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly string _rootName;
    private readonly Func<string, string, bool> _isInstanceProcess;
    private readonly Action<string> _createRoot;
    private bool _prepared;

    /// <summary>Servers run as one executable whose command line names the instance directory.</summary>
    public InstanceDirectories(string rootName, string executable)
        : this(rootName, (directory, commandLine) =>
            // Only the server itself: a shell or an editor looking at the directory is not ours to kill.
            Path.GetFileName(commandLine.Split(' ', 2)[0]) == executable &&
            commandLine.Contains(directory.TrimEnd('/') + "/", StringComparison.Ordinal))
    {
    }

    /// <param name="rootName">The root's name under the temporary directory.</param>
    /// <param name="isInstanceProcess">Whether a process (by command line) belongs to the instance in a directory.</param>
    /// <param name="createRoot">Creates the root directory (default: plain CreateDirectory).</param>
    public InstanceDirectories(string rootName, Func<string, string, bool> isInstanceProcess, Action<string>? createRoot = null)
    {
        _rootName = rootName;
        _isInstanceProcess = isInstanceProcess;
        _createRoot = createRoot ?? (path => System.IO.Directory.CreateDirectory(path));
        RootDirectory = ChooseRoot(rootName);
    }

    /// <summary>Every instance's directory lives under this root.</summary>
    public string RootDirectory { get; }

    /// <summary>Creates the root and, once per process, kills and removes the instances of dead test processes.</summary>
    public async Task PrepareAsync(CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _prepared))
        {
            return;
        }

        await _gate.WaitAsync(cancellationToken);
        try
        {
            if (_prepared)
            {
                return;
            }

            _createRoot(RootDirectory);
            await RemoveOrphanedAsync();
            Volatile.Write(ref _prepared, true);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Records which process owns an instance directory, so a later run can tell it was orphaned.</summary>
    public static void WriteOwner(string directory)
    {
        var pid = Environment.ProcessId;
        var startTime = ReadStartTime(pid) ?? 0;
        File.WriteAllText(Path.Combine(directory, OwnerFileName), string.Create(CultureInfo.InvariantCulture, $"{pid} {startTime}\n"));
    }

    /// <summary>Kills every process of the instance in the directory; waits (bounded) until none is left.</summary>
    public async Task KillAllAsync(string directory, TimeSpan timeout)
    {
        var start = Stopwatch.GetTimestamp();
        while (true)
        {
            var pids = Find(directory);
            if (pids.Count == 0)
            {
                return;
            }

            if (Stopwatch.GetElapsedTime(start) > timeout)
            {
                throw new TimeoutException($"{_rootName}: {directory} still has processes {string.Join(", ", pids)} after {timeout}.");
            }

            foreach (var pid in pids)
            {
                Kill(pid);
            }

            await Task.Delay(50);
        }
    }

    private static string ChooseRoot(string rootName)
    {
        var temp = Path.GetTempPath();
        if (temp.Length > 40 || temp.Any(char.IsWhiteSpace))
        {
            temp = "/tmp";
        }

        return Path.Combine(temp, rootName);
    }

    private async Task RemoveOrphanedAsync()
    {
        foreach (var directory in System.IO.Directory.EnumerateDirectories(RootDirectory))
        {
            if (!IsOrphaned(directory))
            {
                continue;
            }

            // Best effort: a leftover instance holds only its own directory and ports, so it cannot block a new
            // one; failing to remove it must not fail this test run.
            try
            {
                await KillAllAsync(directory, TimeSpan.FromSeconds(10));
                System.IO.Directory.Delete(directory, recursive: true);
            }
            catch (Exception exception) when (exception is IOException or UnauthorizedAccessException or TimeoutException)
            {
                // Another process is removing it at the same time, or a process would not die; leave it.
            }
        }
    }

    private static bool IsOrphaned(string directory)
    {
        string owner;
        try
        {
            owner = File.ReadAllText(Path.Combine(directory, OwnerFileName));
        }
        catch (FileNotFoundException)
        {
            // Between creating the directory and writing the owner file: only trust age.
            return System.IO.Directory.GetCreationTimeUtc(directory) < DateTime.UtcNow.AddHours(-1);
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
            return false;
        }

        var fields = owner.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (fields.Length != 2 ||
            !int.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var pid) ||
            !long.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out var startTime))
        {
            return true;
        }

        return ReadStartTime(pid) != startTime;
    }

    private List<int> Find(string directory)
    {
        var pids = new List<int>();
        foreach (var entry in System.IO.Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(entry), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) &&
                ReadCommandLine(pid) is { } commandLine &&
                _isInstanceProcess(directory, commandLine))
            {
                pids.Add(pid);
            }
        }

        return pids;
    }

    /// <summary>
    /// The start time (clock ticks since boot) of a live process, which tells a live owner from a reused pid;
    /// null when the process is gone or a zombie.
    /// </summary>
    public static long? ReadStartTime(int pid)
    {
        string stat;
        try
        {
            stat = File.ReadAllText($"/proc/{pid}/stat");
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        // A killed owner stays a zombie until its parent (often init, which may reap late) collects it.
        if (fields[0] is "Z" or "X")
        {
            return null;
        }

        const int StartTimeIndex = 22 - 3;
        return fields.Length > StartTimeIndex && long.TryParse(fields[StartTimeIndex], NumberStyles.None, CultureInfo.InvariantCulture, out var ticks)
            ? ticks
            : null;
    }

    private static string? ReadCommandLine(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ');
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static void Kill(int pid)
    {
        try
        {
            using var process = Process.GetProcessById(pid);
            process.Kill();
        }
        catch (Exception exception) when (exception is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            // Already gone.
        }
    }
}
