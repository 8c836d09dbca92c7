using System.Net.Http.Json;
using System.Text.Json;
using ImapProxy.Testing.Certificates;
using ImapProxy.Testing.Consul;
using ImapProxy.Testing.Proxy;

namespace ImapProxy.FunctionalTests.Consul;

/// <summary>A replica registers itself with a real agent after it starts and deregisters when it stops.</summary>
public sealed class ConsulRegistrationTests
{
    [Fact]
    public async Task Replica_RegistersAsImapproxy_AndDeregistersOnStop()
    {
        var directory = System.IO.Directory.CreateTempSubdirectory("imapproxy-registration-").FullName;
        try
        {
            var certificate = TestCertificates.CreateSelfSigned(directory);
            await using var consul = await ConsulAgent.StartAsync();
            var proxy = await ProxyServer.StartAsync(
                [new ProxyBackend("b", "127.0.0.1", 1)],
                certificate.CertificatePath,
                certificate.KeyPath,
                new Dictionary<string, string?>
                {
                    ["ImapProxy:Consul:Enabled"] = "true",
                    ["ImapProxy:Consul:Addresses:0"] = consul.HttpAddress.ToString(),
                    ["ImapProxy:Consul:Registration:Enabled"] = "true",
                    ["ImapProxy:Consul:Registration:ServiceId"] = "imapproxy-test-1",
                    ["ImapProxy:Consul:Registration:Address"] = "127.0.0.1",
                    ["ImapProxy:Consul:Registration:Port"] = "1993",
                });
            try
            {
                await proxy.Logs.WaitForAsync(l => l.Contains("Registered in Consul as imapproxy-test-1", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
                using var http = new HttpClient();
                var services = await http.GetFromJsonAsync<Dictionary<string, JsonElement>>(new Uri(consul.HttpAddress, "v1/agent/services"));
                Assert.NotNull(services);
                var service = services["imapproxy-test-1"];
                Assert.Equal("imapproxy", service.GetProperty("Service").GetString());
                Assert.Equal(1993, service.GetProperty("Port").GetInt32());

                await proxy.StopAsync();
                services = await http.GetFromJsonAsync<Dictionary<string, JsonElement>>(new Uri(consul.HttpAddress, "v1/agent/services"));
                Assert.NotNull(services);
                Assert.False(services.ContainsKey("imapproxy-test-1"));
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
}
