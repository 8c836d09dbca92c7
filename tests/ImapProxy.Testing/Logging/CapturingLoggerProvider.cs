using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace ImapProxy.Testing.Logging;

/// <summary>
/// Keeps every formatted log line (and exception text) so tests can assert on what was logged, and lets a test
/// wait for a line to appear (an event, not a polling loop).
/// </summary>
public sealed class CapturingLoggerProvider : ILoggerProvider
{
    private readonly ConcurrentQueue<string> _lines = new();
    private readonly Lock _waitersLock = new();
    private readonly List<(Func<string, bool> Predicate, TaskCompletionSource<string> Done)> _waiters = [];
    private int _count;

    public IReadOnlyCollection<string> Lines => _lines;

    public string AllText => string.Join('\n', _lines);

    public ILogger CreateLogger(string categoryName) => new CapturingLogger(this, categoryName);

    public int Count => Volatile.Read(ref _count);

    /// <summary>
    /// Completes with the first matching line, ignoring the first <paramref name="skip"/> lines (pass
    /// <see cref="Count"/> taken earlier to wait for a line logged after that moment).
    /// </summary>
    public async Task<string> WaitForAsync(Func<string, bool> predicate, TimeSpan timeout, int skip = 0)
    {
        ArgumentNullException.ThrowIfNull(predicate);
        var done = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_waitersLock)
        {
            _waiters.Add((predicate, done));
        }

        // Lines logged before the waiter was registered.
        foreach (var line in _lines.Skip(skip))
        {
            if (predicate(line))
            {
                done.TrySetResult(line);
                break;
            }
        }

        try
        {
            return await done.Task.WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"No log line matched within {timeout}. Log:\n{AllText}");
        }
        finally
        {
            lock (_waitersLock)
            {
                _waiters.RemoveAll(w => w.Done == done);
            }
        }
    }

    public void Dispose()
    {
    }

    private void Add(string line)
    {
        lock (_waitersLock)
        {
            // Under the lock, so Count and the waiters see the same order of lines.
            _lines.Enqueue(line);
            _count++;
            foreach (var (predicate, done) in _waiters)
            {
                if (predicate(line))
                {
                    done.TrySetResult(line);
                }
            }
        }
    }

    private sealed class CapturingLogger(CapturingLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            owner.Add($"{logLevel} {category}[{eventId.Id}] {formatter(state, exception)}{(exception is null ? "" : " " + exception)}");
        }
    }
}
