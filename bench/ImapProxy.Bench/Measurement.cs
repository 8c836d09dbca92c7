using System.Diagnostics;
using System.Net.Sockets;
using System.Security.Authentication;
using HdrHistogram;

namespace ImapProxy.Bench;

/// <summary>The recorded window, in <see cref="Stopwatch"/> timestamps; an operation counts if it completes inside.</summary>
internal readonly record struct MeasureWindow(long Start, long End)
{
    public static MeasureWindow StartingAfter(long now, double warmupSeconds, double durationSeconds)
    {
        long start = now + SecondsToTicks(warmupSeconds);
        return new MeasureWindow(start, start + SecondsToTicks(durationSeconds));
    }

    public double Seconds => TicksToSeconds(End - Start);

    public static long SecondsToTicks(double seconds) => (long)(seconds * Stopwatch.Frequency);

    public static double TicksToSeconds(long ticks) => (double)ticks / Stopwatch.Frequency;

    /// <summary>Waits until <paramref name="timestamp"/>.</summary>
    public static async Task DelayUntilAsync(long timestamp)
    {
        long remaining = timestamp - Stopwatch.GetTimestamp();
        if (remaining > 0)
        {
            await Task.Delay(TimeSpan.FromSeconds(TicksToSeconds(remaining)));
        }
    }
}

/// <summary>One worker's results; written only by that worker, merged after all workers finish.</summary>
internal sealed class WorkerStats
{
    // Operations are bounded by the per-operation timeout; anything longer is clamped to this.
    private const long HighestMicroseconds = 600_000_000;

    private readonly LongHistogram _histogram = new(HighestMicroseconds, 3);

    public long Ops { get; private set; }

    public long Bytes { get; private set; }

    public LongHistogram Histogram => _histogram;

    /// <summary>Records an operation that ran from <paramref name="start"/> to <paramref name="end"/> if it ended in the window.</summary>
    public void Record(in MeasureWindow window, long start, long end, long bytes)
    {
        if (end < window.Start || end >= window.End)
        {
            return;
        }

        long microseconds = (end - start) * 1_000_000 / Stopwatch.Frequency;
        _histogram.RecordValue(Math.Clamp(microseconds, 0, HighestMicroseconds));
        Ops++;
        Bytes += bytes;
    }
}

/// <summary>Counts errors from every worker and prints the first few to stderr.</summary>
internal sealed class ErrorLog
{
    private const int MaxPrinted = 20;
    private long _count;

    public long Count => Interlocked.Read(ref _count);

    public void Report(string what)
    {
        long n = Interlocked.Increment(ref _count);
        if (n <= MaxPrinted)
        {
            Console.Error.WriteLine($"error: {what}");
        }
        else if (n == MaxPrinted + 1)
        {
            Console.Error.WriteLine("error: (further errors are counted, not printed)");
        }
    }

    public void Report(string what, Exception exception, ImapConnection? connection)
    {
        string cause = connection is { TimedOut: true } ? "timed out" : $"{exception.GetType().Name}: {exception.Message}";
        Report($"{what}: {cause}");
    }
}

internal static class Failures
{
    /// <summary>The exceptions a connection can fail with: network errors, a timeout (watchdog abort), TLS, protocol.</summary>
    public static bool IsConnectionFailure(Exception exception) =>
        exception is IOException or SocketException or ObjectDisposedException or AuthenticationException or BenchException;
}

/// <summary>The target's process tree and the generator's own CPU, sampled at both edges of a window.</summary>
internal sealed record WindowSamples(
    ProcessSample? TargetBefore, ProcessSample? TargetAfter, double SelfBefore, double SelfAfter, long AllocatedBytes)
{
    /// <summary>
    /// Samples at <paramref name="window"/>'s start and end. The /proc walk happens outside the generator's own CPU
    /// reading at each edge so the measuring does not count as load generation.
    /// </summary>
    public static async Task<WindowSamples> TakeAsync(MeasureWindow window, IReadOnlyList<int> pids)
    {
        await MeasureWindow.DelayUntilAsync(window.Start);
        ProcessSample? before = pids.Count > 0 ? ProcessTree.Sample(pids, withPss: false) : null;
        double selfBefore = ProcessTree.SelfCpuSeconds();
        long allocatedBefore = GC.GetTotalAllocatedBytes();
        await MeasureWindow.DelayUntilAsync(window.End);
        long allocatedAfter = GC.GetTotalAllocatedBytes();
        double selfAfter = ProcessTree.SelfCpuSeconds();
        ProcessSample? after = pids.Count > 0 ? ProcessTree.Sample(pids, withPss: false) : null;
        return new WindowSamples(before, after, selfBefore, selfAfter, allocatedAfter - allocatedBefore);
    }
}
