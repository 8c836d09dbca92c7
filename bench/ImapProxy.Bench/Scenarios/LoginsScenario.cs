using System.Diagnostics;
using HdrHistogram;

namespace ImapProxy.Bench.Scenarios;

/// <summary>
/// <c>logins</c>: each client loops connect, (TLS handshake), greeting, LOGIN, LOGOUT, close. One operation is one
/// whole cycle. A failed cycle counts an error and the client starts over on a new connection.
/// </summary>
internal static class LoginsScenario
{
    // After a failed cycle: keeps a refusing target from turning the client into a busy loop.
    private static readonly TimeSpan s_errorBackoff = TimeSpan.FromMilliseconds(50);

    public static async Task<BenchResult> RunAsync(Target target, ErrorLog errors)
    {
        BenchOptions options = target.Options;
        int clients = options.Clients;
        using var watchdog = new Watchdog(clients);
        var stats = new WorkerStats[clients];
        for (int k = 0; k < clients; k++)
        {
            stats[k] = new WorkerStats();
        }

        var window = MeasureWindow.StartingAfter(Stopwatch.GetTimestamp(), options.WarmupSeconds, options.DurationSeconds);
        var workers = new Task[clients];
        for (int k = 0; k < clients; k++)
        {
            workers[k] = RunClientAsync(target, watchdog, k, stats[k], window, errors);
        }

        WindowSamples samples = await WindowSamples.TakeAsync(window, options.PidTree);
        await Task.WhenAll(workers);

        var latency = new LongHistogram(stats[0].Histogram.HighestTrackableValue, 3);
        long ops = 0;
        foreach (WorkerStats s in stats)
        {
            latency.Add(s.Histogram);
            ops += s.Ops;
        }

        var result = new BenchResult
        {
            Scenario = options.ScenarioName,
            Label = options.Label,
            Tls = options.Tls,
            Clients = clients,
            Ops = ops,
            Seconds = window.Seconds,
            OpsPerSecond = ops / window.Seconds,
            Latency = latency,
        };
        result.SetTargetCpu(samples.TargetBefore, samples.TargetAfter);
        result.SetGeneratorCost(samples);
        return result;
    }

    private static async Task RunClientAsync(Target target, Watchdog watchdog, int slot, WorkerStats stats, MeasureWindow window, ErrorLog errors)
    {
        // Yield first so every client is started before any of them runs.
        await Task.Yield();
        byte[] buffer = new byte[4096];
        int user = slot % target.Users;
        int clients = target.Options.Clients;
        while (true)
        {
            long start = Stopwatch.GetTimestamp();
            if (start >= window.End)
            {
                return;
            }

            ImapConnection? connection = null;
            bool ok = false;
            try
            {
                connection = await target.OpenLoggedInAsync(buffer, watchdog, slot, user);
                Reply reply = await connection.CommandAsync(ImapCommands.Logout, ImapCommands.LogoutTag, target.TimeoutTicks);
                if (reply is not (Reply.Ok or Reply.Closed))
                {
                    throw new BenchException($"LOGOUT: {connection.Describe(reply)}");
                }

                ok = true;
            }
            catch (Exception ex) when (Failures.IsConnectionFailure(ex))
            {
                errors.Report("login cycle", ex, connection);
            }
            finally
            {
                connection?.Dispose();
                watchdog.Watch(slot, null);
            }

            if (ok)
            {
                stats.Record(window, start, Stopwatch.GetTimestamp(), 0);
            }
            else
            {
                await Task.Delay(s_errorBackoff);
            }

            user = (user + clients) % target.Users;
        }
    }
}
