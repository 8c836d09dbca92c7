using System.Diagnostics;
using System.Globalization;

namespace ImapProxy.Testing.Dovecot;

/// <summary>
/// Finds an instance's processes through /proc. Dovecot names each child "dovecot-INSTANCE/service", and the
/// master's command line holds the config path, so a unique instance name and directory identify them all.
/// </summary>
internal static class DovecotProcesses
{
    /// <summary>The pids of the master (by config path) and of every child (by instance name).</summary>
    public static List<int> Find(string instanceName, string configPath)
    {
        var pids = new List<int>();
        var childTitle = instanceName + "/";
        foreach (var entry in System.IO.Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(entry), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
            {
                continue;
            }

            var commandLine = ReadCommandLine(pid);
            if (commandLine is not null && (commandLine.Contains(childTitle, StringComparison.Ordinal) || commandLine.Contains(configPath, StringComparison.Ordinal)))
            {
                pids.Add(pid);
            }
        }

        return pids;
    }

    /// <summary>Kills every process of an instance and waits (bounded) until none is left.</summary>
    public static async Task KillAllAsync(string instanceName, string configPath, TimeSpan timeout)
    {
        var start = Stopwatch.GetTimestamp();
        while (true)
        {
            var pids = Find(instanceName, configPath);
            if (pids.Count == 0)
            {
                return;
            }

            if (Stopwatch.GetElapsedTime(start) > timeout)
            {
                throw new TimeoutException($"Dovecot instance {instanceName} still has processes {string.Join(", ", pids)} after {timeout}.");
            }

            foreach (var pid in pids)
            {
                Kill(pid);
            }

            await Task.Delay(50);
        }
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
