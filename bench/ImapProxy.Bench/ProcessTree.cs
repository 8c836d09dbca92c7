using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace ImapProxy.Bench;

/// <summary>A process identity that survives pid reuse: the pid and its start time (in clock ticks since boot).</summary>
internal readonly record struct ProcessKey(int Pid, long StartTime);

/// <summary>CPU and memory of a process tree at one instant.</summary>
internal sealed class ProcessSample
{
    public ProcessSample(long timestamp, Dictionary<ProcessKey, long> cpuTicks, long rssKb, long pssKb)
    {
        Timestamp = timestamp;
        CpuTicks = cpuTicks;
        RssKb = rssKb;
        PssKb = pssKb;
    }

    public long Timestamp { get; }

    /// <summary>utime + stime + cutime + cstime per process, in clock ticks.</summary>
    public Dictionary<ProcessKey, long> CpuTicks { get; }

    /// <summary>Sum of VmRSS: shared pages (code, shared memory) count once per process.</summary>
    public long RssKb { get; }

    /// <summary>Sum of Pss from smaps_rollup: shared pages divided among the processes that map them.</summary>
    public long PssKb { get; }

    public int Processes => CpuTicks.Count;
}

/// <summary>
/// Samples a target's processes from /proc: the given roots and every descendant (by ppid chains), found afresh at
/// each sample because targets such as Dovecot start and end login and mail processes all the time.
/// </summary>
/// <remarks>
/// CPU between two samples is, per process (keyed by pid and start time), its ticks at the end minus its ticks at
/// the start (zero if it started in between). Ticks include cutime/cstime, the CPU of children the process has
/// waited for, so short-lived children (Dovecot's login processes) reaped by a tree member are counted, in full.
/// Approximations: a process that exits between the samples loses its ticks since the first sample unless its
/// parent is in the tree (then its whole life is counted, including the part before the window); ticks are 10 ms.
/// </remarks>
internal static class ProcessTree
{
    private const ulong AtClockTick = 17;

    public static double TicksPerSecond { get; } = ReadClockTicks();

    public static ProcessSample Sample(IReadOnlyList<int> roots, bool withPss)
    {
        var parents = new Dictionary<int, int>();
        var stats = new Dictionary<int, (long StartTime, long Ticks)>();
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
            {
                continue;
            }

            string? stat = TryRead($"/proc/{pid}/stat");
            if (stat is not null && TryParseStat(stat, out int ppid, out long ticks, out long startTime))
            {
                parents[pid] = ppid;
                stats[pid] = (startTime, ticks);
            }
        }

        var children = new Dictionary<int, List<int>>();
        foreach ((int pid, int ppid) in parents)
        {
            if (!children.TryGetValue(ppid, out List<int>? list))
            {
                list = [];
                children[ppid] = list;
            }

            list.Add(pid);
        }

        var tree = new HashSet<int>();
        var pending = new Stack<int>();
        foreach (int root in roots)
        {
            if (stats.ContainsKey(root))
            {
                pending.Push(root);
            }
        }

        while (pending.Count > 0)
        {
            int pid = pending.Pop();
            if (!tree.Add(pid))
            {
                continue;
            }

            if (children.TryGetValue(pid, out List<int>? list))
            {
                foreach (int child in list)
                {
                    pending.Push(child);
                }
            }
        }

        var cpu = new Dictionary<ProcessKey, long>(tree.Count);
        long rss = 0;
        long pss = 0;
        foreach (int pid in tree)
        {
            (long startTime, long ticks) = stats[pid];
            cpu[new ProcessKey(pid, startTime)] = ticks;
            rss += ReadKbField($"/proc/{pid}/status", "VmRSS:");
            if (withPss)
            {
                pss += ReadKbField($"/proc/{pid}/smaps_rollup", "Pss:");
            }
        }

        return new ProcessSample(Stopwatch.GetTimestamp(), cpu, rss, pss);
    }

    /// <summary>CPU seconds the tree used between two samples (see the remarks on the type).</summary>
    public static double CpuSeconds(ProcessSample before, ProcessSample after)
    {
        long ticks = 0;
        foreach ((ProcessKey key, long end) in after.CpuTicks)
        {
            ticks += end - before.CpuTicks.GetValueOrDefault(key);
        }

        return ticks / TicksPerSecond;
    }

    /// <summary>This process's own CPU (user + system) in seconds.</summary>
    public static double SelfCpuSeconds()
    {
        string? stat = TryRead("/proc/self/stat");
        return stat is not null && TryParseStat(stat, out _, out long ticks, out _) ? ticks / TicksPerSecond : double.NaN;
    }

    /// <summary>The RLIMIT_NOFILE soft limit of this process, from /proc/self/limits.</summary>
    public static long? OpenFilesLimit()
    {
        string? limits = TryRead("/proc/self/limits");
        if (limits is null)
        {
            return null;
        }

        foreach (string line in limits.Split('\n'))
        {
            if (line.StartsWith("Max open files", StringComparison.Ordinal))
            {
                string[] parts = line["Max open files".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return parts.Length > 0 && long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out long soft) ? soft : null;
            }
        }

        return null;
    }

    // /proc/PID/stat: "pid (comm) state ppid ...". comm may hold spaces and parentheses, so fields are counted
    // from the last ')'. After it, field 3 (state) is index 0: ppid is field 4, utime 14, stime 15, cutime 16,
    // cstime 17, starttime 22 (proc(5)).
    private static bool TryParseStat(string stat, out int ppid, out long ticks, out long startTime)
    {
        ppid = 0;
        ticks = 0;
        startTime = 0;
        int close = stat.LastIndexOf(')');
        if (close < 0 || close + 2 > stat.Length)
        {
            return false;
        }

        string[] fields = stat[(close + 2)..].Split(' ');
        if (fields.Length < 20)
        {
            return false;
        }

        long utime = 0, stime = 0, cutime = 0, cstime = 0;
        bool ok = int.TryParse(fields[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out ppid)
            && long.TryParse(fields[11], NumberStyles.Integer, CultureInfo.InvariantCulture, out utime)
            && long.TryParse(fields[12], NumberStyles.Integer, CultureInfo.InvariantCulture, out stime)
            && long.TryParse(fields[13], NumberStyles.Integer, CultureInfo.InvariantCulture, out cutime)
            && long.TryParse(fields[14], NumberStyles.Integer, CultureInfo.InvariantCulture, out cstime)
            && long.TryParse(fields[19], NumberStyles.Integer, CultureInfo.InvariantCulture, out startTime);
        ticks = utime + stime + cutime + cstime;
        return ok;
    }

    // A "Name:   1234 kB" line of /proc/PID/status or smaps_rollup; 0 when absent (kernel threads have no VmRSS).
    private static long ReadKbField(string path, string name)
    {
        string? text = TryRead(path);
        if (text is null)
        {
            return 0;
        }

        foreach (ReadOnlySpan<char> line in text.AsSpan().EnumerateLines())
        {
            if (line.StartsWith(name, StringComparison.Ordinal))
            {
                ReadOnlySpan<char> value = line[name.Length..].Trim();
                int space = value.IndexOf(' ');
                return long.TryParse(space < 0 ? value : value[..space], NumberStyles.None, CultureInfo.InvariantCulture, out long kb) ? kb : 0;
            }
        }

        return 0;
    }

    private static string? TryRead(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // The process exited between listing and reading.
            return null;
        }
    }

    // sysconf(_SC_CLK_TCK) is glibc reading AT_CLKTCK from the auxiliary vector; reading /proc/self/auxv gets
    // the same value without interop. /proc times are in these ticks (USER_HZ, 100 on Linux).
    private static double ReadClockTicks()
    {
        try
        {
            byte[] auxv = File.ReadAllBytes("/proc/self/auxv");
            for (int i = 0; i + 16 <= auxv.Length; i += 16)
            {
                ulong type = MemoryMarshal.Read<ulong>(auxv.AsSpan(i));
                if (type == AtClockTick)
                {
                    ulong value = MemoryMarshal.Read<ulong>(auxv.AsSpan(i + 8));
                    return value > 0 ? value : 100;
                }
            }
        }
        catch (IOException)
        {
        }

        return 100;
    }
}
