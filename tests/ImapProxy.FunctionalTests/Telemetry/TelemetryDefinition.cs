namespace ImapProxy.FunctionalTests.Telemetry;

/// <summary>
/// The tests that read a proxy's metrics run alone, after every parallel test class has finished: each proxy
/// host in the process listens to every meter named "ImapProxy" (OpenTelemetry selects meters by name), so
/// another test's proxy would add its counts to ours, and one whose meter was seen first and then disposed
/// leaves our proxy exporting nothing. The classes of this collection run one after the other, each with its
/// own <see cref="TelemetryCluster"/>.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TelemetryDefinition
{
    public const string Name = "Telemetry, alone";
}
