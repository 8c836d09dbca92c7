// ImapProxy.Bench: an IMAP load generator for comparing ImapProxy with direct Dovecot and other proxies.
//
//   ImapProxy.Bench <scenario> --host 127.0.0.1 --port N [--tls] [--clients 50] [--duration 10] [--warmup 2]
//       [--users 1000] [--user-format user{0:D4}] [--password-format pass{0:D4}] [--mailbox INBOX]
//       [--sessions 9000] [--hold 5] [--pid-tree ROOTPID[,ROOTPID...]] [--label NAME] [--timeout 30]
//   (`ImapProxy.Bench --help` lists every option.)
//
// Scenarios (one operation in brackets):
//   logins        --clients loops of connect, TLS, greeting, LOGIN, LOGOUT, close  [one whole cycle]
//   noop          --clients logged-in sessions looping NOOP                          [one NOOP]
//   select-fetch  --clients sessions looping SELECT, FETCH 1:* (FLAGS ENVELOPE)     [one command]
//   fetch-big     --clients sessions looping UID FETCH <big> (BODY.PEEK[]); the message is the first
//                 UID SEARCH LARGER --big-larger result, or --big-uid               [one fetch]
//   idle          --sessions sessions parked in IDLE: RSS per session and the target's CPU while idle
// Users are --user-format/--password-format of 1..--users; client k starts at user k % users + 1 and, in
// `logins`, moves on by --clients users per cycle. --tls is implicit TLS (any certificate is accepted).
//
// Timing: --warmup seconds unrecorded, then --duration seconds recorded; an operation counts when it completes in
// the recorded window. Latency is per operation in microseconds, one HdrHistogram per client, merged at the end.
// --pid-tree: the target's root pids; at both edges of the window the roots and all their descendants are found in
// /proc and their CPU (utime+stime+cutime+cstime) and VmRSS summed (see ProcessTree for the approximations).
//
// Output: progress and errors on stderr; exactly one JSON object on one line on stdout, for example
//   {"scenario":"noop","label":"imapproxy","tls":false,"clients":50,"ops":123456,"seconds":10,"ops_per_sec":12345.6,
//    "p50_us":..,"p90_us":..,"p99_us":..,"p999_us":..,"max_us":..,"mb_per_sec":null,"errors":0,
//    "target_cpu_seconds":..,"target_cpu_us_per_op":..,"rss_before_kb":null,"rss_after_kb":null,
//    "kb_per_session":null,"target_cpu_percent_idle":null, ...extras...}
// Fields that do not apply are null. mb_per_sec is literal (message) bytes per second in MB of 10^6 bytes.
// Extras: sessions (idle: how many reached IDLE), mean_us, bytes, target_cpu_percent (100 = one core, over the
// window), target_processes, pss_* (idle: Pss from smaps_rollup, which splits shared pages between processes, fairer
// than VmRSS for multi-process targets), rss_midpoint_kb and kb_per_session_marginal (idle: RSS with half the
// sessions open, and the growth from there to all of them per session of the second half; see IdleScenario),
// generator_cpu_seconds and generator_cpu_us_per_op (this process's own CPU
// over the window), tls_session_resumed ("unknown" with --tls: SslStream does not report it), failure (why the run
// could not measure, else null).
//
// Exit code: 0 on success; 1 if errors exceeded 1% of operations, nothing completed, or set-up failed; 2 for bad
// arguments.
//
// Descriptors: the generator holds one per session; a proxy under test holds two (client side and backend side).
// This machine's open-files hard limit is 20,000, so keep `idle --sessions` under ~9,900 against a proxy.

using ImapProxy.Bench;
using ImapProxy.Bench.Scenarios;

// Socket continuations run on the socket engine's epoll threads instead of hopping to the thread pool: the work
// per completion is a line scan and a send, cheaper than the hop (measured: about a third of the CPU per NOOP).
// Read once by the runtime at the first socket operation; an explicit setting in the environment wins.
const string InlineCompletions = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";
if (Environment.GetEnvironmentVariable(InlineCompletions) is null)
{
    Environment.SetEnvironmentVariable(InlineCompletions, "1");
}

if (args.Length == 1 && args[0] is "--help" or "-h")
{
    Console.Out.WriteLine(BenchOptions.Usage);
    return 0;
}

BenchOptions? options = BenchOptions.Parse(args, out string? error);
if (options is null)
{
    Console.Error.WriteLine($"error: {error}");
    Console.Error.WriteLine(BenchOptions.Usage);
    return 2;
}

int descriptors = options.Scenario == Scenario.Idle ? options.Sessions : options.Clients;
if (ProcessTree.OpenFilesLimit() is { } limit && descriptors + 64 > limit)
{
    Console.Error.WriteLine($"error: {descriptors} connections need more descriptors than the open-files limit ({limit}) allows");
    return 2;
}

foreach (int pid in options.PidTree)
{
    if (!Directory.Exists($"/proc/{pid}"))
    {
        Console.Error.WriteLine($"error: --pid-tree: no process {pid}");
        return 2;
    }
}

var target = new Target(options);
var errors = new ErrorLog();
Console.Error.WriteLine(
    $"{options.ScenarioName}: {target.EndPoint}{(options.Tls ? " (TLS)" : "")}, "
    + (options.Scenario == Scenario.Idle
        ? $"{options.Sessions} sessions, hold {options.HoldSeconds} s"
        : $"{options.Clients} clients, warm-up {options.WarmupSeconds} s, measure {options.DurationSeconds} s"));

BenchResult result = options.Scenario switch
{
    Scenario.Logins => await LoginsScenario.RunAsync(target, errors),
    Scenario.Idle => await IdleScenario.RunAsync(target, errors),
    _ => await SessionScenario.RunAsync(target, errors),
};
result.Errors = errors.Count;

if (result.Failure is null && result.Ops == 0)
{
    result.Failure = "no operation completed";
}

using (Stream stdout = Console.OpenStandardOutput())
{
    result.Write(stdout);
}

if (result.Failure is not null)
{
    Console.Error.WriteLine($"failed: {result.Failure}");
    return 1;
}

if (result.Errors * 100 > result.Ops)
{
    Console.Error.WriteLine($"failed: {result.Errors} errors for {result.Ops} operations (over 1%)");
    return 1;
}

return 0;
