using System.Diagnostics;
using System.Runtime.InteropServices;
using ImapProxy.Configuration;
using ImapProxy.Telemetry;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace ImapProxy.Tls;

/// <summary>
/// Gives the C allocator's free pages back to the system after bursts of TLS handshakes
/// (<c>Performance:TrimNativeMemory</c>, glibc only).
/// </summary>
/// <remarks>
/// A handshake allocates and frees far more in OpenSSL than the connection keeps, in between the long-lived
/// allocations of other connections, and glibc keeps the freed pages of its arenas resident. Measured with 4,000 TLS
/// sessions parked in IDLE just after their handshakes: 22.9 KB of resident memory per session, 19.7 KB after one
/// <c>malloc_trim</c>. A timer looks every second whether enough handshakes happened since the last trim, and trims
/// once they pause (a burst is over) or every few seconds while they go on. The trim runs on the thread pool, never
/// on an I/O thread; it holds each arena's lock while it walks it (its duration is logged, at Debug level), so an I/O
/// thread that allocates meanwhile (OpenSSL does, for TLS records) may wait that long.
/// </remarks>
internal sealed partial class AllocatorTrim : IDisposable
{
    /// <summary>Handshakes since the last trim that make the next tick trim.</summary>
    internal const int HandshakesPerTrim = 256;

    /// <summary>How often the timer looks.</summary>
    internal static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    /// <summary>Ticks between trims while handshakes go on without a pause.</summary>
    internal const int TicksPerTrimWhileBusy = 5;

    private readonly ILogger<AllocatorTrim> _logger;
    private readonly ITimer? _timer;
    private int _handshakes;
    private int _seenAtLastTick;
    private int _ticksSinceTrim;
    private int _trims;
    private int _ticking;
    private volatile bool _unavailable;

    public AllocatorTrim(IOptions<ImapProxyOptions> options, TimeProvider timeProvider, ILogger<AllocatorTrim> logger)
    {
        _logger = logger;
        if (options.Value.Performance.TrimNativeMemory && OperatingSystem.IsLinux())
        {
            _timer = timeProvider.CreateTimer(static state => ((AllocatorTrim)state!).Tick(), this, Interval, Interval);
        }
    }

    /// <summary>Trims done so far (tests, diagnostics).</summary>
    internal int Trims => Volatile.Read(ref _trims);

    /// <summary>A TLS handshake finished (either side of the proxy).</summary>
    public void OnHandshake()
    {
        if (_timer is not null)
        {
            Interlocked.Increment(ref _handshakes);
        }
    }

    public void Dispose() => _timer?.Dispose();

    [LibraryImport("libc", EntryPoint = "malloc_trim")]
    private static partial int MallocTrim(nuint pad);

    private void Tick()
    {
        // A tick can fire while the last one still runs (a starved thread pool, a slow trim): that one does the work.
        if (Interlocked.Exchange(ref _ticking, 1) != 0)
        {
            return;
        }

        try
        {
            TickOnce();
        }
        finally
        {
            Volatile.Write(ref _ticking, 0);
        }
    }

    private void TickOnce()
    {
        _ticksSinceTrim++;
        var handshakes = Volatile.Read(ref _handshakes);
        var paused = handshakes == _seenAtLastTick;
        _seenAtLastTick = handshakes;
        if (_unavailable || handshakes < HandshakesPerTrim || (!paused && _ticksSinceTrim < TicksPerTrimWhileBusy))
        {
            return;
        }

        Interlocked.Add(ref _handshakes, -handshakes);
        _seenAtLastTick = 0;
        _ticksSinceTrim = 0;
        var started = Stopwatch.GetTimestamp();
        try
        {
            _ = MallocTrim(0); // 1 if memory was given back; either way it is done
        }
        catch (Exception ex) when (ex is EntryPointNotFoundException or DllNotFoundException)
        {
            _unavailable = true; // not glibc (musl has no malloc_trim), or no libc by that name
            return;
        }

        Interlocked.Increment(ref _trims);
        Log.AllocatorTrimmed(_logger, Stopwatch.GetElapsedTime(started).TotalMilliseconds);
    }
}
