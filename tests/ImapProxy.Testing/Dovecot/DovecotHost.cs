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

    private static readonly SemaphoreSlim s_gate = new(1, 1);
    private static bool s_prepared;

    /// <summary>
    /// Instance directories and leftovers. Dovecot titles its children "INSTANCE/service" and the master's command
    /// line holds the config path, so the instance name and the config path identify every process.
    /// </summary>
    public static InstanceDirectories Instances { get; } = new(
        "imapproxy-dovecot",
        (directory, commandLine) =>
            commandLine.Contains(InstancePrefix + Path.GetFileName(directory.TrimEnd('/')) + "/", StringComparison.Ordinal) ||
            commandLine.Contains(Path.Combine(directory, "dovecot.conf"), StringComparison.Ordinal),
        CreateTraversableDirectory);

    /// <summary>All instances live under one short root: Unix socket paths under base_dir are capped at 107 bytes.</summary>
    public static string RootDirectory => Instances.RootDirectory;

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
            await Instances.PrepareAsync(cancellationToken);
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

    public static UnixFileMode Mode755 =>
        UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
        UnixFileMode.GroupRead | UnixFileMode.GroupExecute |
        UnixFileMode.OtherRead | UnixFileMode.OtherExecute;

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
}
