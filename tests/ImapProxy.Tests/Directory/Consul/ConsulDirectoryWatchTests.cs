using System.Net;
using System.Web;
using ImapProxy.Configuration;
using ImapProxy.Connections;
using ImapProxy.Directory.Consul;
using ImapProxy.Telemetry;
using ImapProxy.Testing.Telemetry;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Xunit;

namespace ImapProxy.Tests.Directory.Consul;

/// <summary>The watches over recorded Consul answers: index rules, errors and recovery, each watch on its own.</summary>
public sealed class ConsulDirectoryWatchTests : IAsyncLifetime
{
    private const string HealthPath = "/v1/health/service/imap-backend";
    private const string StatesPath = "/v1/kv/imapproxy/backends/";
    private const string OverridesPath = "/v1/kv/imapproxy/overrides/";
    private readonly RecordedConsulHandlerFake _consul = new();
    private readonly CancellationTokenSource _stop = new(TimeSpan.FromSeconds(60));
    private readonly TestMeterFactory _meters = new();
    private ConsulDirectory _directory = null!;

    private static string Instances(params (string Id, int Port, string Status)[] instances) =>
        "[" + string.Join(",", instances.Select(i =>
            $$$"""{"Node":{"Node":"n1","Address":"127.0.0.1"},"Service":{"ID":"{{{i.Id}}}","Service":"imap-backend","Address":"127.0.0.1","Port":{{{i.Port}}},"Meta":{"weight":"100"}},"Checks":[{"CheckID":"serfHealth","Status":"passing"},{"CheckID":"tcp","Status":"{{{i.Status}}}"}]}""")) + "]";

    public Task InitializeAsync()
    {
        var options = Options.Create(new ImapProxyOptions
        {
            Consul = new ConsulOptions
            {
                Enabled = true,
                Addresses = ["http://127.0.0.1:1"],
                RetryDelay = TimeSpan.FromMilliseconds(20),
                MaxRetryDelay = TimeSpan.FromMilliseconds(50),

                // A watch's query waits here until the test queues its answer: with the default 2 s it could time out
                // on a slow machine and mark the directory degraded in the middle of a test.
                RequestTimeout = TimeSpan.FromHours(1),
            },
        });
        var client = new ConsulClient(new HttpClient(_consul), options);
        _directory = new ConsulDirectory(client, options, new SessionRegistry(), TimeProvider.System, new ImapProxyMetrics(_meters), NullLogger<ConsulDirectory>.Instance);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _stop.CancelAsync();
        await _directory.StopAsync(CancellationToken.None);
        _directory.Dispose();
        _stop.Dispose();
        _meters.Dispose();
    }

    private Task<string?> NextHealthIndexAsync() => NextIndexAsync(HealthPath);

    /// <summary>The index of the next query on <paramref name="path"/> (null: not blocking); others' are skipped.</summary>
    private async Task<string?> NextIndexAsync(string path)
    {
        while (true)
        {
            var uri = await _consul.Requests.Reader.ReadAsync(_stop.Token);
            if (uri.AbsolutePath == path)
            {
                return HttpUtility.ParseQueryString(uri.Query)["index"];
            }
        }
    }

    /// <summary>Waits for the query on <paramref name="path"/> at <paramref name="index"/>, skipping those before it.</summary>
    private async Task QueryAsync(string path, string index)
    {
        while (await NextIndexAsync(path) != index)
        {
        }
    }

    /// <summary>The key-value watches' first answers (nothing under either prefix); their next queries wait.</summary>
    private void AnswerKeyValueWatches()
    {
        _consul.Enqueue(StatesPath, HttpStatusCode.NotFound, "", 3);
        _consul.Enqueue(OverridesPath, HttpStatusCode.NotFound, "", 3);
    }

    [Fact]
    public async Task HealthWatch_FollowsIndexRules_AndKeepsTheLastViewThroughErrors()
    {
        _consul.Enqueue(HealthPath, HttpStatusCode.OK, Instances(("b1", 1001, "passing"), ("b2", 1002, "passing")), 10);
        _consul.Enqueue(HealthPath, HttpStatusCode.OK, Instances(("b1", 1001, "passing"), ("b2", 1002, "critical")), 12);
        _consul.Enqueue(HealthPath, HttpStatusCode.OK, Instances(("b1", 1001, "passing"), ("b2", 1002, "critical")), 5);
        _consul.Enqueue(HealthPath, HttpStatusCode.InternalServerError, "rpc error", 0);
        AnswerKeyValueWatches();

        await _directory.StartAsync(_stop.Token);

        Assert.Null(await NextHealthIndexAsync()); // first read: not blocking
        Assert.Equal("10", await NextHealthIndexAsync());
        Assert.Equal("12", await NextHealthIndexAsync());
        // The index went backwards (12 -> 5): start over without blocking.
        Assert.Null(await NextHealthIndexAsync());
        // After the 500 the same (non-blocking) query is retried (it waits for an answer: the 500 has been taken in by
        // then); the last view kept serving meanwhile.
        Assert.Null(await NextHealthIndexAsync());
        Assert.Equal(["b1"], _directory.View.Candidates.Select(c => c.Id));
        Assert.NotNull(_directory.Degraded);
        _consul.Enqueue(HealthPath, HttpStatusCode.OK, Instances(("b1", 1001, "passing"), ("b2", 1002, "passing"), ("b3", 1003, "passing")), 20);
        Assert.Equal("20", await NextHealthIndexAsync());

        Assert.Equal(["b1", "b2", "b3"], _directory.View.Candidates.Select(c => c.Id));
        Assert.Null(_directory.Degraded);
        Assert.True(_directory.HasView);
    }

    [Fact]
    public async Task AWatchThatFails_KeepsTheDirectoryDegraded_WhileAnotherSucceeds()
    {
        _consul.Enqueue(HealthPath, HttpStatusCode.OK, Instances(("b1", 1001, "passing")), 10);
        _consul.Enqueue(StatesPath, HttpStatusCode.NotFound, "", 3);
        _consul.Enqueue(OverridesPath, HttpStatusCode.InternalServerError, "rpc error", 0);

        await _directory.StartAsync(_stop.Token);
        Assert.Null(await NextIndexAsync(OverridesPath));
        Assert.Null(await NextIndexAsync(OverridesPath)); // the retry after the 500: it has been taken in by then
        Assert.Contains("overrides watch: ", _directory.Degraded);
        Assert.True(double.IsInfinity(_directory.ViewAgeSeconds)); // the overrides were never read

        // The health watch succeeds again (a new index); the overrides still fail.
        _consul.Enqueue(HealthPath, HttpStatusCode.OK, Instances(("b1", 1001, "passing"), ("b2", 1002, "passing")), 11);
        await QueryAsync(HealthPath, "11"); // the query at 10 may still be in the queue
        Assert.Equal(["b1", "b2"], _directory.View.Candidates.Select(c => c.Id));
        Assert.Contains("overrides watch: ", _directory.Degraded);

        // The overrides answer: nothing fails any more, and every watch has a result.
        _consul.Enqueue(OverridesPath, HttpStatusCode.NotFound, "", 4);
        Assert.Equal("4", await NextIndexAsync(OverridesPath));
        Assert.Null(_directory.Degraded);
        Assert.InRange(_directory.ViewAgeSeconds, 0, 60);
    }

    [Theory]
    [InlineData("", BackendStateExpectation.Active, null)]
    [InlineData("draining", BackendStateExpectation.Draining, null)]
    [InlineData("DISABLED", BackendStateExpectation.Disabled, null)]
    [InlineData("{\"state\":\"draining\",\"weight\":50}", BackendStateExpectation.Draining, 50d)]
    [InlineData("{\"weight\":300}", BackendStateExpectation.Active, 300d)]
    public void TryParseState_AcceptsPlainAndJson(string value, BackendStateExpectation expected, double? weight)
    {
        Assert.True(ConsulDirectory.TryParseState(System.Text.Encoding.UTF8.GetBytes(value), out var state, out var parsedWeight));
        Assert.Equal(expected.ToString(), state.ToString());
        Assert.Equal(weight, parsedWeight);
    }

    [Theory]
    [InlineData("sleeping")]
    [InlineData("{\"state\":")]
    [InlineData("42")]
    public void TryParseState_RejectsNonsense(string value)
    {
        Assert.False(ConsulDirectory.TryParseState(System.Text.Encoding.UTF8.GetBytes(value), out _, out _));
    }

    public enum BackendStateExpectation
    {
        Active,
        Draining,
        Disabled,
    }
}
