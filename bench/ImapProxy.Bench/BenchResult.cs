using System.Text.Json;
using HdrHistogram;

namespace ImapProxy.Bench;

/// <summary>The one JSON object printed at the end; a field that does not apply to the scenario is null.</summary>
internal sealed class BenchResult
{
    public required string Scenario { get; init; }

    public string? Label { get; init; }

    public bool Tls { get; init; }

    public int? Clients { get; set; }

    public int? Sessions { get; set; }

    public long Ops { get; set; }

    public double? Seconds { get; set; }

    public double? OpsPerSecond { get; set; }

    public LongHistogram? Latency { get; set; }

    public long? Bytes { get; set; }

    public double? MegabytesPerSecond { get; set; }

    public long Errors { get; set; }

    public double? TargetCpuSeconds { get; set; }

    public double? TargetCpuMicrosecondsPerOp { get; set; }

    public double? TargetCpuPercent { get; set; }

    public int? TargetProcesses { get; set; }

    public long? RssBeforeKb { get; set; }

    public long? RssAfterKb { get; set; }

    public double? KbPerSession { get; set; }

    /// <summary>idle: RSS with the first half of the sessions open.</summary>
    public long? RssMidpointKb { get; set; }

    /// <summary>idle: RSS growth from the first half of the sessions to all, per session of the second half.</summary>
    public double? KbPerSessionMarginal { get; set; }

    public long? PssBeforeKb { get; set; }

    public long? PssAfterKb { get; set; }

    public double? PssKbPerSession { get; set; }

    public double? TargetCpuPercentIdle { get; set; }

    public double? GeneratorCpuSeconds { get; set; }

    public double? GeneratorCpuMicrosecondsPerOp { get; set; }

    /// <summary>Why the run could not measure (set-up failed, nothing completed); null on success.</summary>
    public string? Failure { get; set; }

    /// <summary>Fills the target-CPU fields from two samples of the target's process tree.</summary>
    public void SetTargetCpu(ProcessSample? before, ProcessSample? after)
    {
        if (before is null || after is null)
        {
            return;
        }

        double seconds = ProcessTree.CpuSeconds(before, after);
        double elapsed = MeasureWindow.TicksToSeconds(after.Timestamp - before.Timestamp);
        TargetCpuSeconds = seconds;
        TargetCpuPercent = elapsed > 0 ? seconds / elapsed * 100 : null;
        TargetCpuMicrosecondsPerOp = Ops > 0 ? seconds * 1e6 / Ops : null;
        TargetProcesses = after.Processes;
    }

    /// <summary>Fills the generator's own cost over the window: CPU, and managed allocations (stderr only).</summary>
    public void SetGeneratorCost(WindowSamples samples)
    {
        GeneratorCpuSeconds = samples.SelfAfter - samples.SelfBefore;
        GeneratorCpuMicrosecondsPerOp = Ops > 0 ? GeneratorCpuSeconds * 1e6 / Ops : null;
        if (Ops > 0)
        {
            Console.Error.WriteLine($"generator: {GeneratorCpuMicrosecondsPerOp:F1} µs CPU and {(double)samples.AllocatedBytes / Ops:F0} bytes allocated per operation");
        }
    }

    public void Write(Stream output)
    {
        using (var json = new Utf8JsonWriter(output))
        {
            json.WriteStartObject();
            json.WriteString("scenario", Scenario);
            json.WriteString("label", Label);
            json.WriteBoolean("tls", Tls);
            WriteNumber(json, "clients", Clients);
            json.WriteNumber("ops", Ops);
            WriteNumber(json, "seconds", Seconds, 3);
            WriteNumber(json, "ops_per_sec", OpsPerSecond, 1);
            bool hasLatency = Latency is not null && Latency.TotalCount > 0;
            WriteNumber(json, "p50_us", hasLatency ? Latency!.GetValueAtPercentile(50) : null);
            WriteNumber(json, "p90_us", hasLatency ? Latency!.GetValueAtPercentile(90) : null);
            WriteNumber(json, "p99_us", hasLatency ? Latency!.GetValueAtPercentile(99) : null);
            WriteNumber(json, "p999_us", hasLatency ? Latency!.GetValueAtPercentile(99.9) : null);
            WriteNumber(json, "max_us", hasLatency ? Latency!.GetMaxValue() : null);
            WriteNumber(json, "mb_per_sec", MegabytesPerSecond, 2);
            json.WriteNumber("errors", Errors);
            WriteNumber(json, "target_cpu_seconds", TargetCpuSeconds, 3);
            WriteNumber(json, "target_cpu_us_per_op", TargetCpuMicrosecondsPerOp, 2);
            WriteNumber(json, "rss_before_kb", RssBeforeKb);
            WriteNumber(json, "rss_after_kb", RssAfterKb);
            WriteNumber(json, "kb_per_session", KbPerSession, 2);
            WriteNumber(json, "target_cpu_percent_idle", TargetCpuPercentIdle, 3);

            // Beyond the fields above: context for reading them.
            WriteNumber(json, "sessions", Sessions);
            WriteNumber(json, "mean_us", hasLatency ? Latency!.GetMean() : null, 1);
            WriteNumber(json, "bytes", Bytes);
            WriteNumber(json, "target_cpu_percent", TargetCpuPercent, 2);
            WriteNumber(json, "target_processes", TargetProcesses);
            WriteNumber(json, "pss_before_kb", PssBeforeKb);
            WriteNumber(json, "pss_after_kb", PssAfterKb);
            WriteNumber(json, "pss_kb_per_session", PssKbPerSession, 2);
            WriteNumber(json, "rss_midpoint_kb", RssMidpointKb);
            WriteNumber(json, "kb_per_session_marginal", KbPerSessionMarginal, 2);
            WriteNumber(json, "generator_cpu_seconds", GeneratorCpuSeconds, 3);
            WriteNumber(json, "generator_cpu_us_per_op", GeneratorCpuMicrosecondsPerOp, 2);

            // SslStream does not say whether a handshake resumed a session, so this is never guessed.
            json.WriteString("tls_session_resumed", Tls ? "unknown" : null);
            json.WriteString("failure", Failure);
            json.WriteEndObject();
        }

        output.Write("\n"u8);
        output.Flush();
    }

    private static void WriteNumber(Utf8JsonWriter json, string name, long? value)
    {
        if (value is { } v)
        {
            json.WriteNumber(name, v);
        }
        else
        {
            json.WriteNull(name);
        }
    }

    private static void WriteNumber(Utf8JsonWriter json, string name, double? value, int decimals)
    {
        if (value is { } v && double.IsFinite(v))
        {
            json.WriteNumber(name, Math.Round(v, decimals));
        }
        else
        {
            json.WriteNull(name);
        }
    }
}
