using ImapProxy.Directory.Consul;
using Xunit;

namespace ImapProxy.Tests.Directory.Consul;

public class BlockingIndexTests
{
    [Theory]
    [InlineData(0UL, 42UL, 42UL)] // first answer
    [InlineData(42UL, 42UL, 42UL)] // timeout, nothing changed
    [InlineData(42UL, 57UL, 57UL)] // a change
    [InlineData(42UL, 7UL, 0UL)] // went backwards: start over with a non-blocking read
    [InlineData(0UL, 0UL, 1UL)] // never block on 0
    [InlineData(5UL, 0UL, 0UL)] // backwards to 0: start over
    public void Next_FollowsConsulsRules(ulong previous, ulong returned, ulong expected)
    {
        Assert.Equal(expected, BlockingIndex.Next(previous, returned));
    }

    [Theory]
    [InlineData(0UL, 5UL, true)]
    [InlineData(5UL, 5UL, false)]
    [InlineData(5UL, 6UL, true)]
    [InlineData(5UL, 3UL, true)]
    public void Changed_IsFalseOnlyForAnUnchangedIndex(ulong previous, ulong returned, bool expected)
    {
        Assert.Equal(expected, BlockingIndex.Changed(previous, returned));
    }
}
