using System.Net.Http.Json;
using System.Text.Json;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Consul;
using ImapProxy.Testing.Dovecot;
using ImapProxy.Testing.Proxy;
using ImapProxy.Testing.Raw;

namespace ImapProxy.FunctionalTests.Consul;

/// <summary>
/// A replica registers itself with a real agent after it starts, and leaves the catalog as soon as it begins to stop:
/// before its spliced sessions have drained, so that nothing in front of it sends new clients during the grace.
/// </summary>
public sealed class ConsulRegistrationTests
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Replica_RegistersAsImapproxy_AndDeregistersAsItBeginsToStop_WhileASessionStillRuns()
    {
        var directory = System.IO.Directory.CreateTempSubdirectory("imapproxy-registration-").FullName;
        try
        {
            var certificate = TestCertificates.CreateSelfSigned(directory);
            await using var backend = await DovecotInstance.StartAsync(new DovecotOptions { Users = [new DovecotUser("alice", "alice-pass")] });
            await using var consul = await ConsulAgent.StartAsync();
            await consul.RegisterServiceAsync(ConsulCluster.Service, "dovecot-1", backend.Address, backend.Port, new Dictionary<string, string> { ["weight"] = "100" }, tcpCheckInterval: TimeSpan.FromSeconds(1));
            await consul.WaitForHealthAsync(ConsulCluster.Service, "dovecot-1", "passing", s_limit);

            var settings = ConsulCluster.ProxySettings(consul);
            settings["ImapProxy:Consul:Registration:Enabled"] = "true";
            settings["ImapProxy:Consul:Registration:ServiceId"] = "imapproxy-test-1";
            settings["ImapProxy:Consul:Registration:Address"] = "127.0.0.1";
            settings["ImapProxy:Consul:Registration:Port"] = "1993";
            settings["ImapProxy:Session:ShutdownGrace"] = "00:05:00"; // far beyond the waits below: the session ends it
            var proxy = await ProxyServer.StartAsync([], certificate.CertificatePath, certificate.KeyPath, settings);
            try
            {
                await proxy.Logs.WaitForAsync(l => l.Contains("Registered in Consul as imapproxy-test-1", StringComparison.Ordinal), s_limit);
                using var http = new HttpClient();
                var service = (await ServicesAsync(http, consul))["imapproxy-test-1"];
                Assert.Equal("imapproxy", service.GetProperty("Service").GetString());
                Assert.Equal(1993, service.GetProperty("Port").GetInt32());

                await proxy.Logs.WaitForAsync(l => l.Contains("candidates [dovecot-1]", StringComparison.Ordinal), s_limit);
                await using var client = await RawImapClient.ConnectAsync(proxy.Imaps, implicitTls: true, serverCertificate: certificate.Certificate);
                await client.ReadLineAsync();
                Assert.StartsWith("a OK", (await client.CommandAsync("a", "LOGIN alice alice-pass"))[^1], StringComparison.Ordinal);

                // The stop waits for the spliced session; the registration is gone meanwhile, and the session works on.
                var stopping = proxy.StopAsync();
                await proxy.Logs.WaitForAsync(l => l.Contains("Deregistered imapproxy-test-1", StringComparison.Ordinal), s_limit);
                Assert.False((await ServicesAsync(http, consul)).ContainsKey("imapproxy-test-1"));
                Assert.False(stopping.IsCompleted);
                Assert.StartsWith("b OK", (await client.CommandAsync("b", "NOOP"))[^1], StringComparison.Ordinal);

                Assert.StartsWith("c OK", (await client.CommandAsync("c", "LOGOUT"))[^1], StringComparison.Ordinal);
                await stopping.WaitAsync(s_limit);
            }
            finally
            {
                await proxy.DisposeAsync();
            }
        }
        finally
        {
            System.IO.Directory.Delete(directory, recursive: true);
        }
    }

    private static async Task<Dictionary<string, JsonElement>> ServicesAsync(HttpClient http, ConsulAgent consul) =>
        await http.GetFromJsonAsync<Dictionary<string, JsonElement>>(new Uri(consul.HttpAddress, "v1/agent/services")) ?? [];
}
