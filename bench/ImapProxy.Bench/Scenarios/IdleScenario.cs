using System.Diagnostics;

namespace ImapProxy.Bench.Scenarios;

/// <summary>
/// <c>idle</c>: the target's RSS with N sessions parked in IDLE, per session, and its CPU while they sit there.
/// Baseline sample; open half of <c>--sessions</c> connections, <c>--connect-concurrency</c> at a time (LOGIN, SELECT,
/// IDLE, wait for <c>+</c>); settle; sample RSS (the midpoint); open the other half; settle; sample RSS; sample CPU over
/// <c>--hold</c> seconds; then DONE, LOGOUT and close all.
/// </summary>
/// <remarks>
/// <c>kb_per_session</c> is the whole growth over the baseline per session. It depends on what the target did before:
/// memory an earlier figure freed is taken again without growing the RSS (seen with ImapProxy: TLS sessions right
/// after the plain idle figure came out 6 to 9 KB below TLS sessions in a fresh process). The midpoint gives a second
/// figure, <c>kb_per_session_marginal</c>: the growth from the first half to all sessions, per session of the second
/// half, once whatever was free has been taken again and the target's fixed costs are paid.
/// </remarks>
/// <remarks>
/// Descriptors: the generator holds one descriptor per session; a proxy under test holds two (client and backend), so with the
/// machine's 20,000 open-files hard limit a proxy tops out a little under 10,000 sessions.
/// </remarks>
internal static class IdleScenario
{
    private const int ProgressEvery = 1000;

    public static async Task<BenchResult> RunAsync(Target target, ErrorLog errors)
    {
        BenchOptions options = target.Options;
        int count = options.Sessions;
        var result = new BenchResult
        {
            Scenario = options.ScenarioName,
            Label = options.Label,
            Tls = options.Tls,
        };

        IReadOnlyList<int> pids = options.PidTree;
        ProcessSample? baseline = pids.Count > 0 ? ProcessTree.Sample(pids, withPss: true) : null;

        using var watchdog = new Watchdog(count);
        var sessions = new ImapConnection?[count];
        int next = -1;
        int limit = count / 2;
        int established = 0;
        long setupStart = Stopwatch.GetTimestamp();
        var openers = new Task[Math.Min(options.ConnectConcurrency, count)];
        for (int w = 0; w < openers.Length; w++)
        {
            openers[w] = OpenWorkerAsync();
        }

        await Task.WhenAll(openers);
        int firstHalf = established;
        ProcessSample? midpoint = null;
        if (baseline is not null && firstHalf > 0)
        {
            await Task.Delay(TimeSpan.FromSeconds(options.SettleSeconds));
            midpoint = ProcessTree.Sample(pids, withPss: false);
        }

        next = limit - 1;
        limit = count;
        for (int w = 0; w < openers.Length; w++)
        {
            openers[w] = OpenWorkerAsync();
        }

        await Task.WhenAll(openers);
        double setupSeconds = Stopwatch.GetElapsedTime(setupStart).TotalSeconds;
        Console.Error.WriteLine($"idle: {established} of {count} sessions in IDLE after {setupSeconds:F1} s");
        result.Sessions = established;
        result.Ops = established;

        if (established == 0)
        {
            result.Failure = "no session reached IDLE";
            return result;
        }

        // Let the target finish whatever the logins left behind (login processes exiting, GC) before measuring.
        await Task.Delay(TimeSpan.FromSeconds(options.SettleSeconds));
        if (baseline is not null)
        {
            ProcessSample loaded = ProcessTree.Sample(pids, withPss: true);
            result.RssBeforeKb = baseline.RssKb;
            result.RssAfterKb = loaded.RssKb;
            result.KbPerSession = (double)(loaded.RssKb - baseline.RssKb) / established;
            if (midpoint is not null && established > firstHalf)
            {
                result.RssMidpointKb = midpoint.RssKb;
                result.KbPerSessionMarginal = (double)(loaded.RssKb - midpoint.RssKb) / (established - firstHalf);
            }

            result.PssBeforeKb = baseline.PssKb;
            result.PssAfterKb = loaded.PssKb;
            result.PssKbPerSession = (double)(loaded.PssKb - baseline.PssKb) / established;
        }

        var hold = MeasureWindow.StartingAfter(Stopwatch.GetTimestamp(), 0, options.HoldSeconds);
        WindowSamples samples = await WindowSamples.TakeAsync(hold, pids);
        result.Seconds = hold.Seconds;
        result.SetTargetCpu(samples.TargetBefore, samples.TargetAfter);
        result.TargetCpuPercentIdle = result.TargetCpuPercent;
        result.TargetCpuMicrosecondsPerOp = null;
        result.GeneratorCpuSeconds = samples.SelfAfter - samples.SelfBefore;

        // Tear down politely, as many at a time as were opened at a time.
        next = -1;
        var closers = new Task[openers.Length];
        for (int w = 0; w < closers.Length; w++)
        {
            closers[w] = CloseWorkerAsync();
        }

        await Task.WhenAll(closers);
        return result;

        async Task OpenWorkerAsync()
        {
            await Task.Yield();
            byte[]? buffer = null;
            int i;
            while ((i = Interlocked.Increment(ref next)) < limit)
            {
                // Buffers stay with their sessions; small, since an idle session receives next to nothing.
                buffer ??= new byte[4096];
                ImapConnection? connection = null;
                try
                {
                    connection = await target.OpenLoggedInAsync(buffer, watchdog, i, i % target.Users);
                    Reply reply = await connection.CommandAsync(target.Select, ImapCommands.SelectTag, target.TimeoutTicks);
                    if (reply != Reply.Ok)
                    {
                        throw new BenchException($"SELECT {options.Mailbox}: {connection.Describe(reply)}");
                    }

                    reply = await connection.CommandAsync(ImapCommands.Idle, ImapCommands.IdleTag, target.TimeoutTicks, stopAtContinuation: true);
                    if (reply != Reply.Continuation)
                    {
                        throw new BenchException($"IDLE: {connection.Describe(reply)}");
                    }

                    sessions[i] = connection;
                    buffer = null;
                    int done = Interlocked.Increment(ref established);
                    if (done % ProgressEvery == 0)
                    {
                        Console.Error.WriteLine($"idle: {done} sessions in IDLE");
                    }
                }
                catch (Exception ex) when (Failures.IsConnectionFailure(ex))
                {
                    errors.Report($"idle session {i}", ex, connection);
                    connection?.Dispose();
                    watchdog.Watch(i, null);
                }
            }
        }

        async Task CloseWorkerAsync()
        {
            await Task.Yield();
            int i;
            while ((i = Interlocked.Increment(ref next)) < count)
            {
                ImapConnection? connection = sessions[i];
                if (connection is null)
                {
                    continue;
                }

                sessions[i] = null;
                try
                {
                    Reply reply = await connection.CommandAsync(ImapCommands.Done, ImapCommands.IdleTag, target.TimeoutTicks);
                    if (reply != Reply.Ok)
                    {
                        throw new BenchException($"DONE: {connection.Describe(reply)}");
                    }

                    if (!await target.LogoutAsync(connection))
                    {
                        throw new BenchException("LOGOUT failed");
                    }
                }
                catch (Exception ex) when (Failures.IsConnectionFailure(ex))
                {
                    errors.Report($"idle session {i} teardown", ex, connection);
                }
                finally
                {
                    connection.Dispose();
                    watchdog.Watch(i, null);
                }
            }
        }
    }
}
