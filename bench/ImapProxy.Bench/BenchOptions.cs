using System.Globalization;

namespace ImapProxy.Bench;

internal enum Scenario
{
    Logins,
    Noop,
    SelectFetch,
    FetchBig,
    Idle,
}

/// <summary>Command-line options, parsed by hand as <c>--key value</c> pairs (and the <c>--tls</c> flag).</summary>
internal sealed class BenchOptions
{
    public Scenario Scenario { get; private set; }

    public string ScenarioName { get; private set; } = "";

    public string Host { get; private set; } = "127.0.0.1";

    public int Port { get; private set; }

    public bool Tls { get; private set; }

    /// <summary>SNI name sent in the TLS handshake; TLS session resumption is cached per this name.</summary>
    public string TlsHost { get; private set; } = "localhost";

    /// <summary>A PEM or DER certificate to trust as the only root; without it any server certificate is accepted.</summary>
    public string? CaCertFile { get; private set; }

    public int Clients { get; private set; } = 50;

    public double DurationSeconds { get; private set; } = 10;

    public double WarmupSeconds { get; private set; } = 2;

    public int Users { get; private set; } = 1000;

    public string UserFormat { get; private set; } = "user{0:D4}";

    public string PasswordFormat { get; private set; } = "pass{0:D4}";

    public int Sessions { get; private set; } = 9000;

    public double HoldSeconds { get; private set; } = 5;

    public double SettleSeconds { get; private set; } = 2;

    /// <summary>How many idle sessions log in at the same time (logins are the expensive part).</summary>
    public int ConnectConcurrency { get; private set; } = 200;

    public IReadOnlyList<int> PidTree { get; private set; } = [];

    public string? Label { get; private set; }

    public string Mailbox { get; private set; } = "INBOX";

    public long? BigUid { get; private set; }

    public long BigLarger { get; private set; } = 4_000_000;

    public double TimeoutSeconds { get; private set; } = 30;

    public const string Usage =
        """
        usage: ImapProxy.Bench <logins|noop|select-fetch|fetch-big|idle> --port N [options]
          --host 127.0.0.1        target address
          --port N                target port (required)
          --tls                   implicit TLS from the first byte; any server certificate is accepted
          --tls-host localhost    SNI name (TLS sessions are cached per name)
          --ca-cert FILE          with --tls: validate the server against this root only (cheaper than the default
                                  of accepting any certificate, which still builds a chain from the system store)
          --clients 50            concurrent clients (logins, noop, select-fetch, fetch-big)
          --duration 10           measured seconds
          --warmup 2              unrecorded seconds before the measurement
          --users 1000            users are user-format/password-format of 1..users
          --user-format user{0:D4}
          --password-format pass{0:D4}
          --mailbox INBOX         mailbox for SELECT
          --big-uid UID           fetch-big: the UID to fetch (default: UID SEARCH LARGER --big-larger)
          --big-larger 4000000    fetch-big: size threshold for the search
          --sessions 9000         idle: sessions to open
          --connect-concurrency 200  idle: sessions logging in at once
          --settle 2              idle: seconds between the last IDLE and the RSS sample
          --hold 5                idle: seconds over which the target's idle CPU is measured
          --pid-tree PID[,PID]    the target's root pids; CPU and RSS are summed over their descendants
          --label NAME            copied into the output
          --timeout 30            seconds allowed for any connect, handshake or response
        """;

    /// <summary>Parses <paramref name="args"/>; on failure returns null and sets <paramref name="error"/>.</summary>
    public static BenchOptions? Parse(string[] args, out string? error)
    {
        var options = new BenchOptions();
        error = null;
        if (args.Length == 0)
        {
            error = "missing scenario";
            return null;
        }

        options.ScenarioName = args[0];
        switch (args[0])
        {
            case "logins":
                options.Scenario = Scenario.Logins;
                break;
            case "noop":
                options.Scenario = Scenario.Noop;
                break;
            case "select-fetch":
                options.Scenario = Scenario.SelectFetch;
                break;
            case "fetch-big":
                options.Scenario = Scenario.FetchBig;
                break;
            case "idle":
                options.Scenario = Scenario.Idle;
                break;
            default:
                error = $"unknown scenario '{args[0]}'";
                return null;
        }

        for (int i = 1; i < args.Length; i++)
        {
            string key = args[i];
            if (key == "--tls")
            {
                options.Tls = true;
                continue;
            }

            if (i + 1 >= args.Length)
            {
                error = $"{key} needs a value";
                return null;
            }

            string value = args[++i];
            error = options.Set(key, value);
            if (error is not null)
            {
                return null;
            }
        }

        error = options.Validate();
        return error is null ? options : null;
    }

    public string UserName(int index) => string.Format(CultureInfo.InvariantCulture, UserFormat, index);

    public string Password(int index) => string.Format(CultureInfo.InvariantCulture, PasswordFormat, index);

    private string? Set(string key, string value)
    {
        switch (key)
        {
            case "--host":
                Host = value;
                return null;
            case "--port":
                return ParseInt(key, value, 1, 65535, v => Port = v);
            case "--tls-host":
                TlsHost = value;
                return null;
            case "--ca-cert":
                CaCertFile = value;
                return null;
            case "--clients":
                return ParseInt(key, value, 1, 100_000, v => Clients = v);
            case "--duration":
                return ParseDouble(key, value, 0.1, v => DurationSeconds = v);
            case "--warmup":
                return ParseDouble(key, value, 0, v => WarmupSeconds = v);
            case "--users":
                return ParseInt(key, value, 1, 10_000_000, v => Users = v);
            case "--user-format":
                UserFormat = value;
                return null;
            case "--password-format":
                PasswordFormat = value;
                return null;
            case "--sessions":
                return ParseInt(key, value, 1, 1_000_000, v => Sessions = v);
            case "--hold":
                return ParseDouble(key, value, 0.1, v => HoldSeconds = v);
            case "--settle":
                return ParseDouble(key, value, 0, v => SettleSeconds = v);
            case "--connect-concurrency":
                return ParseInt(key, value, 1, 100_000, v => ConnectConcurrency = v);
            case "--label":
                Label = value;
                return null;
            case "--mailbox":
                Mailbox = value;
                return null;
            case "--big-uid":
                return ParseInt(key, value, 1, int.MaxValue, v => BigUid = v);
            case "--big-larger":
                return ParseInt(key, value, 0, int.MaxValue, v => BigLarger = v);
            case "--timeout":
                return ParseDouble(key, value, 0.1, v => TimeoutSeconds = v);
            case "--pid-tree":
                var pids = new List<int>();
                foreach (string part in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                {
                    if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) || pid <= 0)
                    {
                        return $"--pid-tree: '{part}' is not a pid";
                    }

                    pids.Add(pid);
                }

                PidTree = pids;
                return null;
            default:
                return $"unknown option {key}";
        }
    }

    private string? Validate()
    {
        if (Port == 0)
        {
            return "--port is required";
        }

        try
        {
            _ = UserName(1);
            _ = Password(1);
        }
        catch (FormatException)
        {
            return "--user-format/--password-format must be .NET format strings with {0}";
        }

        if (Mailbox.Contains('\r', StringComparison.Ordinal) || Mailbox.Contains('\n', StringComparison.Ordinal))
        {
            return "--mailbox must not contain CR or LF";
        }

        return null;
    }

    private static string? ParseInt(string key, string value, int min, int max, Action<int> set)
    {
        if (!int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out int parsed) || parsed < min || parsed > max)
        {
            return $"{key}: expected an integer in [{min}, {max}], got '{value}'";
        }

        set(parsed);
        return null;
    }

    private static string? ParseDouble(string key, string value, double min, Action<double> set)
    {
        if (!double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double parsed) || parsed < min || !double.IsFinite(parsed))
        {
            return $"{key}: expected a number ≥ {min}, got '{value}'";
        }

        set(parsed);
        return null;
    }
}
