using ImapProxy.Backends;
using ImapProxy.Directory;
using Xunit;

namespace ImapProxy.Tests.Directory;

public class RendezvousHashTests
{
    private static readonly string[] s_users = Enumerable.Range(0, 20_000).Select(i => $"user{i:D5}@example.org").ToArray();

    private static BackendEndpoint Backend(string id, double weight = 100) => new(id, "127.0.0.1", 143, weight);

    [Fact]
    public void Pick_NoBackends_ReturnsNull()
    {
        Assert.Null(RendezvousHash.Pick("alice", []));
    }

    [Fact]
    public void Pick_IsDeterministic_AndIndependentOfListOrder()
    {
        var a = new[] { Backend("b1"), Backend("b2"), Backend("b3") };
        var b = new[] { Backend("b3"), Backend("b1"), Backend("b2") };
        foreach (var user in s_users.Take(2000))
        {
            Assert.Equal(RendezvousHash.Pick(user, a)!.Id, RendezvousHash.Pick(user, b)!.Id);
        }
    }

    [Fact]
    public void Pick_KnownVectors_StayStableAcrossReleases()
    {
        // Replicas of different versions must agree on placement: these pins fail if the hash or scoring changes.
        var backends = new[] { Backend("dovecot-1"), Backend("dovecot-2"), Backend("dovecot-3") };
        var picks = new[] { "alice", "bob", "carol", "dave", "erin", "frank" }.Select(u => RendezvousHash.Pick(u, backends)!.Id);
        Assert.Equal(["dovecot-3", "dovecot-3", "dovecot-1", "dovecot-1", "dovecot-1", "dovecot-1"], picks.ToArray());
    }

    [Fact]
    public void Pick_EqualWeights_SpreadEvenly()
    {
        var backends = new[] { Backend("b1"), Backend("b2"), Backend("b3"), Backend("b4") };
        var counts = s_users.GroupBy(u => RendezvousHash.Pick(u, backends)!.Id).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(4, counts.Count);
        foreach (var count in counts.Values)
        {
            // 5000 expected each; 4 standard deviations is about ±245.
            Assert.InRange(count, 4700, 5300);
        }
    }

    [Fact]
    public void Pick_RespectsWeights()
    {
        var backends = new[] { Backend("small", 100), Backend("large", 300) };
        var large = s_users.Count(u => RendezvousHash.Pick(u, backends)!.Id == "large");
        // Expected share 3/4 = 15000 of 20000.
        Assert.InRange(large, 14600, 15400);
    }

    [Fact]
    public void Pick_RemovingABackend_MovesOnlyItsUsers()
    {
        var all = new[] { Backend("b1"), Backend("b2"), Backend("b3"), Backend("b4") };
        var without = all.Where(b => b.Id != "b3").ToArray();
        foreach (var user in s_users)
        {
            var before = RendezvousHash.Pick(user, all)!.Id;
            var after = RendezvousHash.Pick(user, without)!.Id;
            if (before != "b3")
            {
                Assert.Equal(before, after);
            }
        }
    }

    [Fact]
    public void Pick_AddingABackend_TakesOnlyItsShare()
    {
        var before = new[] { Backend("b1"), Backend("b2"), Backend("b3") };
        var after = before.Append(Backend("b4")).ToArray();
        var moved = 0;
        foreach (var user in s_users)
        {
            var oldPick = RendezvousHash.Pick(user, before)!.Id;
            var newPick = RendezvousHash.Pick(user, after)!.Id;
            if (oldPick != newPick)
            {
                // Users only ever move to the new backend, never between old ones.
                Assert.Equal("b4", newPick);
                moved++;
            }
        }

        // The new backend takes about 1/4 of everyone.
        Assert.InRange(moved, 4700, 5300);
    }
}
