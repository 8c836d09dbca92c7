using ImapProxy.Connections;
using ImapProxy.Directory;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Hosting;

namespace ImapProxy.Admin;

/// <summary>/healthz (the process is alive) and /readyz (listening, not stopping, the directory has a view).</summary>
internal static class HealthEndpoints
{
    public static IEndpointRouteBuilder MapHealthEndpoints(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapGet("/healthz", () => Results.Text("ok\n"));
        endpoints.MapGet("/readyz", (IHostApplicationLifetime lifetime, IBackendDirectory directory, ListenerRegistry listeners) =>
        {
            var problems = new List<string>();
            if (!lifetime.ApplicationStarted.IsCancellationRequested)
            {
                problems.Add("not listening yet");
            }

            if (lifetime.ApplicationStopping.IsCancellationRequested)
            {
                problems.Add("shutting down");
            }

            if (!directory.HasView)
            {
                problems.Add("directory has no view of the backends");
            }

            return problems.Count == 0
                ? Results.Text(directory.Degraded is { } degraded ? $"ready (degraded: {degraded})\n" : "ready\n")
                : Results.Text("not ready: " + string.Join("; ", problems) + "\n", statusCode: StatusCodes.Status503ServiceUnavailable);
        });
        return endpoints;
    }
}
