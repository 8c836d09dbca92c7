using System.Diagnostics;
using System.Globalization;
using HdrHistogram;

namespace ImapProxy.Bench.Scenarios;

/// <summary>
/// <c>noop</c>, <c>select-fetch</c> and <c>fetch-big</c>: <c>--clients</c> sessions log in (not measured), then each
/// loops over its pre-encoded commands, one operation per command. A session whose connection fails is abandoned
/// (one error); a tagged NO/BAD counts an error and the session goes on.
/// </summary>
internal static class SessionScenario
{
    public static async Task<BenchResult> RunAsync(Target target, ErrorLog errors)
    {
        BenchOptions options = target.Options;
        int clients = options.Clients;
        using var watchdog = new Watchdog(clients);

        // Set-up: every session at once; the scenario is about steady state, so a missing session is a failure.
        var setups = new Task<Session?>[clients];
        for (int k = 0; k < clients; k++)
        {
            setups[k] = SetUpAsync(target, watchdog, k, errors);
        }

        Session?[] sessions = await Task.WhenAll(setups);
        int ready = sessions.Count(s => s is not null);
        var result = new BenchResult
        {
            Scenario = options.ScenarioName,
            Label = options.Label,
            Tls = options.Tls,
            Clients = clients,
        };
        if (ready < clients)
        {
            result.Failure = $"{clients - ready} of {clients} sessions failed to set up";
            await CloseAllAsync(target, sessions);
            return result;
        }

        var window = MeasureWindow.StartingAfter(Stopwatch.GetTimestamp(), options.WarmupSeconds, options.DurationSeconds);
        var loops = new Task[clients];
        for (int k = 0; k < clients; k++)
        {
            loops[k] = RunLoopAsync(target, sessions[k]!, window, errors);
        }

        WindowSamples samples = await WindowSamples.TakeAsync(window, options.PidTree);
        await Task.WhenAll(loops);
        await CloseAllAsync(target, sessions);

        var latency = new LongHistogram(sessions[0]!.Stats.Histogram.HighestTrackableValue, 3);
        long ops = 0;
        long bytes = 0;
        foreach (Session? session in sessions)
        {
            latency.Add(session!.Stats.Histogram);
            ops += session.Stats.Ops;
            bytes += session.Stats.Bytes;
        }

        result.Ops = ops;
        result.Seconds = window.Seconds;
        result.OpsPerSecond = ops / window.Seconds;
        result.Latency = latency;
        if (options.Scenario == Scenario.FetchBig)
        {
            // Literal (message) bytes only, in MB of 10^6 bytes.
            result.Bytes = bytes;
            result.MegabytesPerSecond = bytes / window.Seconds / 1e6;
        }

        result.SetTargetCpu(samples.TargetBefore, samples.TargetAfter);
        result.SetGeneratorCost(samples);
        return result;
    }

    private static async Task<Session?> SetUpAsync(Target target, Watchdog watchdog, int slot, ErrorLog errors)
    {
        BenchOptions options = target.Options;
        int user = slot % target.Users;
        // A 5 MB literal streams through the buffer, so a bigger one means fewer reads per byte.
        byte[] buffer = new byte[options.Scenario == Scenario.FetchBig ? 64 * 1024 : 16 * 1024];
        ImapConnection? connection = null;
        try
        {
            connection = await target.OpenLoggedInAsync(buffer, watchdog, slot, user);
            Session session = options.Scenario switch
            {
                Scenario.Noop => new Session(connection, [ImapCommands.Noop], [ImapCommands.NoopTag]),
                Scenario.SelectFetch => new Session(
                    connection, [target.Select, ImapCommands.FetchFlagsEnvelope], [ImapCommands.SelectTag, ImapCommands.FetchTag]),
                _ => await SetUpFetchBigAsync(target, connection),
            };
            return session;
        }
        catch (Exception ex) when (Failures.IsConnectionFailure(ex))
        {
            errors.Report($"session {slot} set-up", ex, connection);
            connection?.Dispose();
            return null;
        }
    }

    private static async Task<Session> SetUpFetchBigAsync(Target target, ImapConnection connection)
    {
        BenchOptions options = target.Options;
        Reply reply = await connection.CommandAsync(target.Select, ImapCommands.SelectTag, target.TimeoutTicks);
        if (reply != Reply.Ok)
        {
            throw new BenchException($"SELECT {options.Mailbox}: {connection.Describe(reply)}");
        }

        long uid;
        if (options.BigUid is { } given)
        {
            uid = given;
        }
        else
        {
            var lines = new List<string>();
            reply = await connection.CommandCollectingAsync(
                ImapCommands.UidSearchLarger(options.BigLarger), ImapCommands.SearchTag, target.TimeoutTicks, lines);
            if (reply != Reply.Ok)
            {
                throw new BenchException($"UID SEARCH LARGER {options.BigLarger}: {connection.Describe(reply)}");
            }

            uid = FirstSearchResult(lines)
                ?? throw new BenchException($"no message larger than {options.BigLarger} bytes in {options.Mailbox}");
        }

        return new Session(connection, [ImapCommands.UidFetchBody(uid)], [ImapCommands.BodyTag]);
    }

    // "* SEARCH 7 9" → 7.
    private static long? FirstSearchResult(List<string> lines)
    {
        foreach (string line in lines)
        {
            string[] words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (words.Length >= 3 && words[0] == "*" && words[1].Equals("SEARCH", StringComparison.OrdinalIgnoreCase)
                && long.TryParse(words[2], NumberStyles.None, CultureInfo.InvariantCulture, out long uid))
            {
                return uid;
            }
        }

        return null;
    }

    private static async Task RunLoopAsync(Target target, Session session, MeasureWindow window, ErrorLog errors)
    {
        // Yield first so every loop is started before any of them runs.
        await Task.Yield();
        ImapConnection connection = session.Connection;
        ReadOnlyMemory<byte>[] commands = session.Commands;
        byte[] tags = session.Tags;
        long timeout = target.TimeoutTicks;
        int next = 0;
        while (true)
        {
            long start = Stopwatch.GetTimestamp();
            if (start >= window.End)
            {
                return;
            }

            Reply reply;
            try
            {
                reply = await connection.CommandAsync(commands[next], tags[next], timeout);
            }
            catch (Exception ex) when (Failures.IsConnectionFailure(ex))
            {
                errors.Report("session abandoned", ex, connection);
                session.Abandon();
                return;
            }

            long end = Stopwatch.GetTimestamp();
            long bytes = connection.TakeLiteralBytes();
            if (reply == Reply.Ok)
            {
                session.Stats.Record(window, start, end, bytes);
            }
            else if (reply == Reply.Closed)
            {
                errors.Report("session abandoned: the server closed the connection");
                session.Abandon();
                return;
            }
            else
            {
                errors.Report($"command answered {connection.Describe(reply)}");
            }

            if (++next == commands.Length)
            {
                next = 0;
            }
        }
    }

    private static async Task CloseAllAsync(Target target, Session?[] sessions)
    {
        var closing = new List<Task<bool>>(sessions.Length);
        foreach (Session? session in sessions)
        {
            if (session is { Abandoned: false })
            {
                closing.Add(target.LogoutAsync(session.Connection));
            }
            else
            {
                session?.Connection.Dispose();
            }
        }

        bool[] closed = await Task.WhenAll(closing);
        int failed = closed.Count(ok => !ok);
        if (failed > 0)
        {
            Console.Error.WriteLine($"note: {failed} sessions did not LOGOUT cleanly (not counted as errors)");
        }
    }

    private sealed class Session
    {
        public Session(ImapConnection connection, ReadOnlyMemory<byte>[] commands, byte[] tags)
        {
            Connection = connection;
            Commands = commands;
            Tags = tags;
        }

        public ImapConnection Connection { get; }

        public ReadOnlyMemory<byte>[] Commands { get; }

        public byte[] Tags { get; }

        public WorkerStats Stats { get; } = new();

        public bool Abandoned { get; private set; }

        public void Abandon()
        {
            Abandoned = true;
            Connection.Dispose();
        }
    }
}
