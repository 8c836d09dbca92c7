using System.Globalization;
using ImapProxy.Configuration;
using ImapProxy.Telemetry;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace ImapProxy.Directory.Consul;

/// <summary>
/// Registers this replica as a service (default "imapproxy") with the local agent once the host has started,
/// retrying with backoff while the agent is away, and deregisters it on shutdown. Its service is stopped before the
/// listeners' (see ImapProxyHost), so the deregistration comes first, while the host's stop token is still fresh.
/// </summary>
internal sealed class ConsulRegistration(
    ConsulClient client,
    IOptions<ImapProxyOptions> options,
    IHostApplicationLifetime lifetime,
    TimeProvider timeProvider,
    ILogger<ConsulRegistration> logger) : BackgroundService
{
    private readonly ConsulOptions _consul = options.Value.Consul;
    private readonly ImapProxyOptions _options = options.Value;
    private bool _registered;

    public string ServiceId => _consul.Registration.ServiceId ??
        $"{_consul.Registration.ServiceName}-{Environment.MachineName}-{_options.Listeners[0].Port.ToString(CultureInfo.InvariantCulture)}";

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // Register only once the listeners are up: a registration must never point at a port that refuses.
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using (lifetime.ApplicationStarted.Register(() => started.TrySetResult()))
        using (stoppingToken.Register(() => started.TrySetCanceled(stoppingToken)))
        {
            try
            {
                await started.Task;
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }

        var registration = _consul.Registration;
        var request = new ConsulServiceRegistration
        {
            ID = ServiceId,
            Name = registration.ServiceName,
            Address = registration.Address,
            Port = registration.Port ?? _options.Listeners[0].Port,
            Tags = registration.Tags.Count > 0 ? registration.Tags : null,
            Meta = new Dictionary<string, string> { ["version"] = typeof(ConsulRegistration).Assembly.GetName().Version?.ToString(3) ?? "0.0.0" },
            Check = registration.CheckUrl is null ? null : new ConsulCheckRegistration
            {
                Http = registration.CheckUrl,
                Interval = Seconds(registration.CheckInterval),
                Timeout = "2s",
                DeregisterCriticalServiceAfter = Seconds(registration.DeregisterCriticalAfter),
            },
        };

        var delay = _consul.RetryDelay;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await client.RegisterServiceAsync(request, stoppingToken);
                _registered = true;
                Log.ConsulRegistered(logger, request.ID, request.Name);
                return;
            }
            catch (ConsulException ex)
            {
                Log.ConsulRegistrationFailed(logger, request.ID, ex.Message);
                await Task.Delay(delay, timeProvider, stoppingToken).ContinueWith(_ => { }, TaskScheduler.Default);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, _consul.MaxRetryDelay.Ticks));
            }
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        if (_registered)
        {
            try
            {
                await client.DeregisterServiceAsync(ServiceId, cancellationToken);
                Log.ConsulDeregistered(logger, ServiceId);
            }
            catch (ConsulException ex)
            {
                // Consul's DeregisterCriticalServiceAfter cleans up what we could not.
                Log.ConsulRegistrationFailed(logger, ServiceId, ex.Message);
            }
        }
    }

    private static string Seconds(TimeSpan value) => ((int)Math.Max(1, value.TotalSeconds)).ToString(CultureInfo.InvariantCulture) + "s";
}
