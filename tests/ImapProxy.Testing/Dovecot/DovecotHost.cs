using System.Globalization;

using ImapProxy.Testing.Processes;

namespace ImapProxy.Testing.Dovecot;

/// <summary>
/// Machine-wide preparation shared by every instance in this process: the mail user, the root directory of
/// all instances, and the removal of instances left running by test processes that died.
/// </summary>
internal static class DovecotHost
{
    /// <summary>
    /// Mail processes run as this dedicated system user. Dovecot refuses uid 0 for mail, the internal users
    /// (dovecot, dovenull) must not own mail, and nobody is shared with other daemons.
    /// </summary>
    public const string MailUser = "imapproxy-mail";

    public const string InstancePrefix = "imapproxy-test-";

    private const string OwnerFileName = "owner";

    private static readonly SemaphoreSlim s_gate = new(1, 1);
    private static bool s_prepared;

    /// <summary>All instances live under one short root: Unix socket paths under base_dir are capped at 107 bytes.</summary>
    public static string RootDirectory { get; } = ChooseRoot();

    public static async Task PrepareAsync(CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref s_prepared))
        {
            return;
        }

        await s_gate.WaitAsync(cancellationToken);
        try
        {
            if (s_prepared)
            {
                return;
            }

            await EnsureMailUserAsync(cancellationToken);
            CreateTraversableDirectory(RootDirectory);
            await RemoveOrphanedInstancesAsync();
            Volatile.Write(ref s_prepared, true);
        }
        finally
        {
            s_gate.Release();
        }
    }

    /// <summary>Creates the directory (and missing parents) with mode 755 so the mail and Dovecot users can traverse it.</summary>
    public static void CreateTraversableDirectory(string path)
    {
        var missing = new Stack<string>();
        for (var probe = path; !System.IO.Directory.Exists(probe); probe = Path.GetDirectoryName(probe)!)
        {
            missing.Push(probe);
        }

        foreach (var directory in missing)
        {
            System.IO.Directory.CreateDirectory(directory);
            SetUnixFileMode(directory, Mode755);
        }

        SetUnixFileMode(path, Mode755);
    }

    public static void SetUnixFileMode(string path, UnixFileMode mode)
    {
        if (OperatingSystem.IsWindows())
        {
            throw new PlatformNotSupportedException("Dovecot test instances run on Linux only.");
        }

        File.SetUnixFileMode(path, mode);
    }

    /// <summary>Records which process owns an instance directory, so a later run can tell it was orphaned.</summary>
    public static void WriteOwner(string instanceDirectory)
    {
        var pid = Environment.ProcessId;
        var startTime = InstanceDirectories.ReadStartTime(pid) ?? 0;
        File.WriteAllText(Path.Combine(instanceDirectory, OwnerFileName), string.Create(CultureInfo.InvariantCulture, $"{pid} {startTime}\n"));
    }

    public static UnixFileMode Mode755 =>
        UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
        UnixFileMode.GroupRead | UnixFileMode.GroupExecute |
        UnixFileMode.OtherRead | UnixFileMode.OtherExecute;

    private static string ChooseRoot()
    {
        var temp = Path.GetTempPath();
        if (temp.Length > 40 || temp.Any(char.IsWhiteSpace))
        {
            temp = "/tmp";
        }

        return Path.Combine(temp, "imapproxy-dovecot");
    }

    private static async Task EnsureMailUserAsync(CancellationToken cancellationToken)
    {
        // Test processes may race to create the user; useradd exits 9 (exists) or 10 (passwd file locked).
        for (var attempt = 1; ; attempt++)
        {
            if ((await ToolRunner.RunAsync("getent", ["passwd", MailUser], cancellationToken)).ExitCode == 0)
            {
                return;
            }

            var result = await ToolRunner.RunAsync(
                "useradd",
                ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", MailUser],
                cancellationToken);
            if (result.ExitCode == 0)
            {
                return;
            }

            if (attempt == 5)
            {
                throw new InvalidOperationException($"Could not create the mail user {MailUser}: useradd exited with {result.ExitCode}: {result.Error.Trim()}");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(100 * attempt), cancellationToken);
        }
    }

    private static async Task RemoveOrphanedInstancesAsync()
    {
        foreach (var directory in System.IO.Directory.EnumerateDirectories(RootDirectory))
        {
            if (!IsOrphaned(directory))
            {
                continue;
            }

            // Best effort: a leftover holds only its own unique directory and ports, so it cannot block a new
            // instance; failing to remove it must not fail this test run.
            var instanceName = InstancePrefix + Path.GetFileName(directory);
            try
            {
                await DovecotProcesses.KillAllAsync(instanceName, Path.Combine(directory, "dovecot.conf"), TimeSpan.FromSeconds(10));
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

        return InstanceDirectories.ReadStartTime(pid) != startTime;
    }
}
