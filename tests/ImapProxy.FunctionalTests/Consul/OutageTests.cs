namespace ImapProxy.FunctionalTests.Consul;

/// <summary>A backend that dies and comes back, seen through a real Consul health check.</summary>
public sealed class BackendOutageTests(ConsulCluster cluster) : IClassFixture<ConsulCluster>
{
    [Fact]
    public async Task StoppedBackend_ItsUsersMoveAtOnceOnRefusal_ThenByHealth_AndReturn()
    {
        // Users that hash to dovecot-1 while both are healthy.
        var users = ConsulCluster.Users.Select(u => u.Name).Where(u => ConsulCluster.HashedId(u, "dovecot-1", "dovecot-2") == "dovecot-1").Take(2).ToArray();
        Assert.Equal(2, users.Length);
        Assert.Equal("dovecot-1", await cluster.LoginLandsOnAsync(users[0]));

        var skip = cluster.Proxy.Logs.Count;
        await cluster.Backend1.StopAsync();

        // Consul has not noticed yet: the refused connection makes the proxy re-hash at once.
        Assert.Equal("dovecot-2", await cluster.LoginLandsOnAsync(users[0]));

        // Once the health check fails, the view itself leaves dovecot-1 out.
        await cluster.Consul.WaitForHealthAsync(ConsulCluster.Service, "dovecot-1", "critical", TimeSpan.FromSeconds(30));
        await cluster.WaitForCandidatesAsync("dovecot-2", skip);
        Assert.Equal("dovecot-2", await cluster.LoginLandsOnAsync(users[1]));

        skip = cluster.Proxy.Logs.Count;
        await cluster.Backend1.RestartAsync();
        await cluster.Consul.WaitForHealthAsync(ConsulCluster.Service, "dovecot-1", "passing", TimeSpan.FromSeconds(30));
        await cluster.WaitForCandidatesAsync("dovecot-1,dovecot-2", skip);

        // Hashing is as before: Consul saw the backend fail and pass again, which clears the local suspicion.
        foreach (var user in users)
        {
            Assert.Equal("dovecot-1", await cluster.LoginLandsOnAsync(user));
        }
    }
}

/// <summary>Consul itself goes away: the proxy keeps serving from its last view, and follows again once it returns.</summary>
public sealed class ConsulOutageTests(ConsulCluster cluster) : IClassFixture<ConsulCluster>
{
    [Fact]
    public async Task ConsulDown_LoginsContinue_LiveSessionsStay_AndWatchesResumeAfterwards()
    {
        const string placed = "user11";
        var hashedUser = "user12";
        var placedOn = ConsulCluster.HashedId(placed, "dovecot-1", "dovecot-2") == "dovecot-1" ? "dovecot-2" : "dovecot-1";
        await cluster.Consul.PutKeyAsync($"imapproxy/users/{placed}", placedOn);
        Assert.Equal(placedOn, await cluster.LoginLandsOnAsync(placed));

        var (live, answer) = await cluster.LoginAsync(hashedUser);
        await using (live)
        {
            Assert.StartsWith("a OK", answer, StringComparison.Ordinal);
            var skip = cluster.Proxy.Logs.Count;
            await cluster.Consul.StopAsync();
            await cluster.Proxy.Logs.WaitForAsync(l => l.Contains("Consul watch of", StringComparison.Ordinal) && l.Contains("failed", StringComparison.Ordinal), TimeSpan.FromSeconds(30), skip);

            // Logins work from the last view and the cached placement (even once the cache entry expired).
            Assert.Equal(placedOn, await cluster.LoginLandsOnAsync(placed));
            Assert.Equal(ConsulCluster.HashedId(hashedUser, "dovecot-1", "dovecot-2"), await cluster.LoginLandsOnAsync(hashedUser));
            using (var http = new HttpClient())
            {
                var ready = await http.GetAsync(new Uri($"http://{cluster.Proxy.Admin}/readyz"));
                Assert.True(ready.IsSuccessStatusCode);
                Assert.Contains("degraded", await ready.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            }

            // The live session was not dropped.
            Assert.StartsWith("b OK", (await live.CommandAsync("b", "NOOP"))[^1], StringComparison.Ordinal);

            // Consul returns (a dev agent forgets its KV; registering the backends again is harmless).
            skip = cluster.Proxy.Logs.Count;
            await cluster.Consul.StartAgainAsync();
            await cluster.RegisterBackendsAsync();
            await cluster.Proxy.Logs.WaitForAsync(l => l.Contains("recovered", StringComparison.Ordinal), TimeSpan.FromSeconds(60), skip);
            Assert.StartsWith("c OK", (await live.CommandAsync("c", "NOOP"))[^1], StringComparison.Ordinal);
        }

        // A later change is seen: disabling the placed user's backend makes its login unavailable.
        var before = cluster.Proxy.Logs.Count;
        await cluster.Consul.PutKeyAsync($"imapproxy/users/{placed}", placedOn);
        await cluster.Consul.PutKeyAsync($"imapproxy/backends/{placedOn}", "disabled");
        await cluster.WaitForCandidatesAsync(placedOn == "dovecot-1" ? "dovecot-2" : "dovecot-1", before);
        var (client, refused) = await cluster.LoginAsync(placed);
        await using (client)
        {
            Assert.Equal("a NO [UNAVAILABLE] Server unavailable, try again later.", refused);
        }
    }
}
