using System.Diagnostics;

namespace ImapProxy.Bench;

/// <summary>
/// Enforces per-operation deadlines for every connection with one timer instead of a token per read: each worker
/// owns a slot, a connection arms a deadline before an operation and disarms it after, and the timer aborts
/// (closes) any connection past its deadline. The hot path pays one timestamp and two volatile writes.
/// </summary>
internal sealed class Watchdog : IDisposable
{
    private readonly ImapConnection?[] _slots;
    private readonly Timer _timer;
    private long _aborted;

    public Watchdog(int slots)
    {
        _slots = new ImapConnection?[slots];
        _timer = new Timer(static state => ((Watchdog)state!).Check(), this, TimeSpan.FromMilliseconds(250), TimeSpan.FromMilliseconds(250));
    }

    public long Aborted => Interlocked.Read(ref _aborted);

    public void Watch(int slot, ImapConnection? connection) => Volatile.Write(ref _slots[slot], connection);

    public void Dispose() => _timer.Dispose();

    private void Check()
    {
        long now = Stopwatch.GetTimestamp();
        for (int i = 0; i < _slots.Length; i++)
        {
            ImapConnection? connection = Volatile.Read(ref _slots[i]);
            if (connection is not null && connection.IsOverdue(now) && !connection.TimedOut)
            {
                Interlocked.Increment(ref _aborted);
                connection.Abort();
            }
        }
    }
}
