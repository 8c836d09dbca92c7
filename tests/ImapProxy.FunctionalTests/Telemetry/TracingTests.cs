using System.Diagnostics;
using System.Net;
using ImapProxy.Telemetry;
using ImapProxy.Testing.Raw;
using OpenTelemetry;
using OpenTelemetry.Trace;

namespace ImapProxy.FunctionalTests.Telemetry;

/// <summary>The spans of one login through a real Dovecot, captured by OpenTelemetry's in-memory exporter.</summary>
[Collection(ClusterDefinition.Name)]
public sealed class TracingTests(ClusterFixture cluster)
{
    [Fact]
    public async Task Login_ProducesThePreAuthSpanTree_AndTheBackendLogsTheSameSessionId()
    {
        var spans = new List<Activity>();
        using (Sdk.CreateTracerProviderBuilder().AddSource(ImapProxyActivities.SourceName).AddInMemoryExporter(spans).Build())
        {
            int localPort;
            await using (var client = await RawImapClient.ConnectAsync(cluster.Proxy.Imaps, IPAddress.Parse("127.0.0.41"), implicitTls: true, serverCertificate: cluster.ServerCertificate))
            {
                await client.ReadLineAsync();
                Assert.StartsWith("a OK", (await client.CommandAsync("a", "LOGIN alice alice-pass"))[^1], StringComparison.Ordinal);
                Assert.StartsWith("b OK", (await client.CommandAsync("b", "NOOP"))[^1], StringComparison.Ordinal);
                localPort = client.LocalEndPoint.Port;
            }

            // The root span ends at hand-over, before the splice answers NOOP; the in-memory exporter exports on stop.
            Activity root;
            lock (spans)
            {
                root = spans.Single(s => s.OperationName == "imap.preauth" && Equals(s.GetTagItem("client.port"), localPort));
            }

            Assert.Equal(ActivityKind.Server, root.Kind);
            Assert.Equal("imaps", root.GetTagItem("imapproxy.listener"));
            Assert.Equal("127.0.0.41", root.GetTagItem("client.address"));
            Assert.Equal("success", root.GetTagItem("imapproxy.login.result"));
            Assert.Equal("alice", root.GetTagItem("enduser.id"));
            var backend = (string?)root.GetTagItem("imapproxy.backend");
            Assert.Equal(cluster.BackendFor("alice") == cluster.Backend1 ? "dovecot-1" : "dovecot-2", backend);

            List<Activity> children;
            lock (spans)
            {
                children = spans.Where(s => s.TraceId == root.TraceId && s.ParentSpanId == root.SpanId).OrderBy(s => s.StartTimeUtc).ToList();
            }

            Assert.Equal(["imap.directory", "imap.backend.connect", "imap.backend.authenticate"], children.Select(c => c.OperationName));
            Assert.Equal("hash", children[0].GetTagItem("imapproxy.directory.source"));
            Assert.Equal(backend, children[1].GetTagItem("imapproxy.backend"));
            Assert.Equal(ActivityKind.Client, children[1].Kind);
            Assert.All(children, c => Assert.True(c.StartTimeUtc >= root.StartTimeUtc && c.StartTimeUtc + c.Duration <= root.StartTimeUtc + root.Duration + TimeSpan.FromMilliseconds(1)));

            // The trace id is the x-session-id the proxy sent in ID: Dovecot logs it as the session.
            var dovecot = cluster.BackendFor("alice");
            await dovecot.WaitForLogAsync(log => log.Contains($"session=<{root.TraceId.ToHexString()}>", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
        }
    }
}
