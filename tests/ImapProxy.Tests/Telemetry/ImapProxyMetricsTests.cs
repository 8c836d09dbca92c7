using System.Diagnostics.Metrics;
using ImapProxy.Telemetry;
using ImapProxy.Testing.Telemetry;
using Xunit;

namespace ImapProxy.Tests.Telemetry;

/// <summary>
/// The counters a login adds to, read as an exporter reads them: a <see cref="MeterListener"/> on the proxy's meter
/// collecting its observable instruments.
/// </summary>
public sealed class ImapProxyMetricsTests : IDisposable
{
    private readonly TestMeterFactory _meters = new();
    private readonly ImapProxyMetrics _metrics;

    public ImapProxyMetricsTests()
    {
        _metrics = new ImapProxyMetrics(_meters);
    }

    public void Dispose() => _meters.Dispose();

    [Fact]
    public void PerLoginCounters_AreObserved_PerTagSet_WithTheirTotals()
    {
        _metrics.ConnectionOpened("imap", "starttls");
        _metrics.ConnectionOpened("imap", "starttls");
        _metrics.ConnectionOpened("imaps", "implicit");
        _metrics.ConnectionClosed("imap");
        _metrics.Login("success", "login");
        _metrics.Login("auth_failed", "plain");
        _metrics.DirectoryLookup("hash");
        _metrics.BackendSessionStarted("dovecot-1");
        _metrics.BackendSessionStarted("dovecot-2");
        _metrics.BackendSessionEnded("dovecot-1");
        _metrics.TlsHandshakeCompleted("imaps", resumed: true);
        _metrics.TlsHandshakeCompleted("imaps", resumed: true);
        _metrics.TlsHandshakeCompleted("imaps", resumed: false);
        _metrics.TlsHandshakeCompleted("imap", resumed: null);

        var observed = Collect();

        Assert.Equal(2, observed[("imapproxy.connections.accepted", "imapproxy.listener=imap,imapproxy.listener.tls=starttls")]);
        Assert.Equal(1, observed[("imapproxy.connections.accepted", "imapproxy.listener=imaps,imapproxy.listener.tls=implicit")]);
        Assert.Equal(1, observed[("imapproxy.connections.active", "imapproxy.listener=imap")]);
        Assert.Equal(1, observed[("imapproxy.connections.active", "imapproxy.listener=imaps")]);
        Assert.Equal(1, observed[("imapproxy.logins", "imapproxy.login.result=success,imapproxy.login.mechanism=login")]);
        Assert.Equal(1, observed[("imapproxy.logins", "imapproxy.login.result=auth_failed,imapproxy.login.mechanism=plain")]);
        Assert.Equal(1, observed[("imapproxy.directory.lookups", "imapproxy.directory.source=hash")]);
        Assert.Equal(0, observed[("imapproxy.backend.sessions.active", "imapproxy.backend=dovecot-1")]);
        Assert.Equal(1, observed[("imapproxy.backend.sessions.active", "imapproxy.backend=dovecot-2")]);
        Assert.Equal(2, observed[("imapproxy.tls.handshakes", "imapproxy.listener=imaps,imapproxy.tls.resumed=true")]);
        Assert.Equal(1, observed[("imapproxy.tls.handshakes", "imapproxy.listener=imaps,imapproxy.tls.resumed=false")]);
        Assert.Equal(1, observed[("imapproxy.tls.handshakes", "imapproxy.listener=imap,imapproxy.tls.resumed=unknown")]);
        Assert.Equal(12, observed.Count);
    }

    [Fact]
    public void ConcurrentAdds_AreAllCounted()
    {
        const int PerThread = 20_000;
        using var start = new Barrier(4);
        var adders = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
        {
            start.SignalAndWait();
            for (var n = 0; n < PerThread; n++)
            {
                _metrics.Login(n % 2 == 0 ? "success" : "auth_failed", "login"); // first adds of both keys race too
                _metrics.ConnectionOpened("imap", "none");
                _metrics.ConnectionClosed("imap");
            }
        })).ToArray();
        foreach (var adder in adders)
        {
            adder.Start();
        }

        foreach (var adder in adders)
        {
            adder.Join();
        }

        var observed = Collect();

        Assert.Equal(2 * PerThread, observed[("imapproxy.logins", "imapproxy.login.result=success,imapproxy.login.mechanism=login")]);
        Assert.Equal(2 * PerThread, observed[("imapproxy.logins", "imapproxy.login.result=auth_failed,imapproxy.login.mechanism=login")]);
        Assert.Equal(4 * PerThread, observed[("imapproxy.connections.accepted", "imapproxy.listener=imap,imapproxy.listener.tls=none")]);
        Assert.Equal(0, observed[("imapproxy.connections.active", "imapproxy.listener=imap")]);
    }

    [Theory]
    [InlineData("imapproxy.connections.accepted", true)]
    [InlineData("imapproxy.logins", true)]
    [InlineData("imapproxy.directory.lookups", true)]
    [InlineData("imapproxy.tls.handshakes", true)]
    [InlineData("imapproxy.connections.active", false)]
    [InlineData("imapproxy.backend.sessions.active", false)]
    public void PerLoginCounters_KeepTheirKind(string name, bool monotonic)
    {
        var instrument = Instruments().Single(instrument => instrument.Name == name);

        // What exporters go by: a monotonic sum (Prometheus counter) or not (gauge).
        Assert.IsType(monotonic ? typeof(ObservableCounter<long>) : typeof(ObservableUpDownCounter<long>), instrument);
    }

    private List<Instrument> Instruments()
    {
        var instruments = new List<Instrument>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, _) =>
            {
                if (instrument.Meter == _metrics.Meter)
                {
                    instruments.Add(instrument);
                }
            },
        };
        listener.Start();
        return instruments;
    }

    /// <summary>Every long measurement of the proxy's meter, by instrument and tags (as "key=value,..."), each once.</summary>
    private Dictionary<(string Instrument, string Tags), long> Collect()
    {
        var observed = new Dictionary<(string, string), long>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter == _metrics.Meter)
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
            observed.Add((instrument.Name, string.Join(",", tags.ToArray().Select(tag => $"{tag.Key}={tag.Value}"))), value));
        listener.Start();
        listener.RecordObservableInstruments();
        observed.Remove(("imapproxy.transferred", "imapproxy.direction=client_to_backend"));
        observed.Remove(("imapproxy.transferred", "imapproxy.direction=backend_to_client"));
        return observed;
    }
}
