namespace ImapProxy.FunctionalTests.Consul;

/// <summary>Placement, hashing and moves with a real Consul agent and real Dovecot backends.</summary>
public sealed class ConsulDirectoryTests(ConsulCluster cluster) : IClassFixture<ConsulCluster>
{
    private static string Other(string id) => id == "dovecot-1" ? "dovecot-2" : "dovecot-1";

    [Fact]
    public async Task PlacedUser_GoesToItsBackend_EvenAgainstTheHash()
    {
        const string user = "user01";
        var hashed = ConsulCluster.HashedId(user, "dovecot-1", "dovecot-2");
        await cluster.Consul.PutKeyAsync($"imapproxy/users/{user}", Other(hashed));
        Assert.Equal(Other(hashed), await cluster.LoginLandsOnAsync(user));
    }

    [Fact]
    public async Task UnplacedUsers_AreHashedAcrossTheHealthyBackends()
    {
        var seen = new HashSet<string>();
        foreach (var user in new[] { "user02", "user03", "user04", "user05", "user06" })
        {
            var landed = await cluster.LoginLandsOnAsync(user);
            Assert.Equal(ConsulCluster.HashedId(user, "dovecot-1", "dovecot-2"), landed);
            seen.Add(landed);
        }

        Assert.Equal(2, seen.Count);
    }

    [Fact]
    public async Task UnknownPlacementTarget_IsUnavailable()
    {
        await cluster.Consul.PutKeyAsync("imapproxy/users/user07", "no-such-backend");
        var (client, answer) = await cluster.LoginAsync("user07");
        await using (client)
        {
            Assert.Equal("a NO [UNAVAILABLE] Server unavailable, try again later.", answer);
        }

        await cluster.Proxy.Logs.WaitForAsync(l => l.Contains("placement target 'no-such-backend' is not a known backend", StringComparison.Ordinal), TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task ChangingThePlacement_KicksTheLiveIdleSession_AndLeavesOthersAlone()
    {
        const string moved = "user08";
        const string bystander = "user09";
        var start = ConsulCluster.HashedId(moved, "dovecot-1", "dovecot-2");
        await cluster.Consul.PutKeyAsync($"imapproxy/users/{moved}", start);
        Assert.Equal(start, await cluster.LoginLandsOnAsync(moved));

        var (movedClient, movedAnswer) = await cluster.LoginAsync(moved);
        var (otherClient, otherAnswer) = await cluster.LoginAsync(bystander);
        await using (movedClient)
        await using (otherClient)
        {
            Assert.StartsWith("a OK", movedAnswer, StringComparison.Ordinal);
            Assert.StartsWith("a OK", otherAnswer, StringComparison.Ordinal);
            foreach (var client in new[] { movedClient, otherClient })
            {
                await client.CommandAsync("b", "SELECT INBOX");
                await client.SendAsync("c IDLE\r\n");
                Assert.StartsWith("+ ", await client.ReadLineAsync(), StringComparison.Ordinal);
            }

            await cluster.Consul.PutKeyAsync($"imapproxy/users/{moved}", Other(start));

            // Idle between responses, so the proxy may say why before it closes.
            Assert.Equal("* BYE Session moved, please reconnect.", await movedClient.ReadLineSkippingKeepalivesAsync(TimeSpan.FromSeconds(20)));
            Assert.True(await movedClient.WaitForCloseAsync(TimeSpan.FromSeconds(10)));

            // The bystander's IDLE is untouched and still in step.
            await otherClient.SendAsync("DONE\r\n");
            Assert.StartsWith("c OK", (await otherClient.ReadUntilTaggedAsync("c"))[^1], StringComparison.Ordinal);
            Assert.StartsWith("d OK", (await otherClient.CommandAsync("d", "NOOP"))[^1], StringComparison.Ordinal);
        }

        Assert.Equal(Other(start), await cluster.LoginLandsOnAsync(moved));
        await cluster.Proxy.Logs.WaitForAsync(l => l.Contains($"Session ended: user={moved}", StringComparison.Ordinal) && l.Contains("reason=kicked: moved", StringComparison.Ordinal), TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task DisablingABackend_KicksItsSessions_AndHashesItsUsersElsewhere()
    {
        const string user = "user10";
        var home = ConsulCluster.HashedId(user, "dovecot-1", "dovecot-2");
        var skip = cluster.Proxy.Logs.Count;
        var (client, answer) = await cluster.LoginAsync(user);
        await using (client)
        {
            Assert.StartsWith("a OK", answer, StringComparison.Ordinal);
            await cluster.Consul.PutKeyAsync($"imapproxy/backends/{home}", "{\"state\":\"disabled\"}");
            try
            {
                await cluster.WaitForCandidatesAsync(Other(home), skip);
                Assert.True(await client.WaitForCloseAsync(TimeSpan.FromSeconds(20)));
                Assert.Equal(Other(home), await cluster.LoginLandsOnAsync(user));
            }
            finally
            {
                skip = cluster.Proxy.Logs.Count;
                await cluster.Consul.DeleteKeyAsync($"imapproxy/backends/{home}");
                await cluster.WaitForCandidatesAsync("dovecot-1,dovecot-2", skip);
            }
        }

        Assert.Equal(home, await cluster.LoginLandsOnAsync(user));
    }
}
