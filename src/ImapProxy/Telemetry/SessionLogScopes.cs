using Microsoft.Extensions.Logging.Console;
using Microsoft.Extensions.Options;

namespace ImapProxy.Telemetry;

/// <summary>
/// Whether a session opens its log scope (<c>session {SessionId}</c> on every pre-auth line): only while the console
/// logger prints scopes (<c>Logging:Console:FormatterOptions:IncludeScopes</c>), or uses a formatter of unknown habits.
/// </summary>
/// <remarks>
/// A scope lives in an AsyncLocal, so while one is open every await of the pre-auth dialogue carries and restores an
/// execution context: about 4% of the CPU of a plain login in a lab A/B, paid for nothing when no line prints it.
/// Asked once per session, so a reloaded logging configuration applies from the next session on.
/// </remarks>
internal sealed class SessionLogScopes(
    IOptionsMonitor<ConsoleLoggerOptions> console,
    IOptionsMonitor<SimpleConsoleFormatterOptions> simple,
    IOptionsMonitor<JsonConsoleFormatterOptions> json,
    IOptionsMonitor<ConsoleFormatterOptions> systemd)
{
    public bool Enabled
    {
        get
        {
            var options = console.CurrentValue;
            return options.FormatterName switch
            {
#pragma warning disable CS0618 // the console's own IncludeScopes: obsolete, still honoured when no formatter is named
                null => simple.CurrentValue.IncludeScopes || options.IncludeScopes,
#pragma warning restore CS0618
                ConsoleFormatterNames.Simple => simple.CurrentValue.IncludeScopes,
                ConsoleFormatterNames.Json => json.CurrentValue.IncludeScopes,
                ConsoleFormatterNames.Systemd => systemd.CurrentValue.IncludeScopes,
                _ => true,
            };
        }
    }
}
