using System.Net;
using System.Net.Sockets;
using ImapProxy.Backends;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace ImapProxy.Tests.Backends;

/// <summary>
/// Backends' host names looked up once per refresh interval. The resolver is a fake (each lookup waits for the test
/// to answer it), so when lookups happen and what a login gets meanwhile is the point.
/// </summary>
public sealed class BackendAddressesTests
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan s_refresh = TimeSpan.FromSeconds(30);
    private static readonly IPAddress[] s_first = [IPAddress.Parse("10.0.0.1")];
    private static readonly IPAddress[] s_second = [IPAddress.Parse("10.0.0.2"), IPAddress.Parse("10.0.0.3")];

    private readonly FakeTimeProvider _time = new();
    private readonly List<TaskCompletionSource<IPAddress[]>> _lookUps = [];
    private readonly BackendAddresses _addresses;

    public BackendAddressesTests() => _addresses = new BackendAddresses(_time, s_refresh, LookUpFake);

    [Fact]
    public async Task AName_IsLookedUpOnce_ForLoginsWaitingTogether_AndThenKnownUntilTheRefresh()
    {
        var first = _addresses.ResolveAsync("imap-backend", CancellationToken.None);
        var second = _addresses.ResolveAsync("IMAP-Backend", CancellationToken.None); // names are case-insensitive
        var lookUp = await NextLookUpAsync(0);
        Assert.False(first.IsCompleted);

        lookUp.SetResult(s_first);

        Assert.Same(s_first, await first.AsTask().WaitAsync(s_limit));
        Assert.Same(s_first, await second.AsTask().WaitAsync(s_limit));
        _time.Advance(s_refresh - TimeSpan.FromSeconds(1));
        Assert.Same(s_first, await AtOnceAsync());
        Assert.Single(LookUps());
    }

    [Fact]
    public async Task AfterTheRefreshInterval_LoginsGoOnWithTheLastAnswer_WhileOneLookUpReplacesIt()
    {
        await KnowAsync(s_first);
        _time.Advance(s_refresh);

        Assert.Same(s_first, await AtOnceAsync());
        Assert.Same(s_first, await AtOnceAsync());
        var refresh = await NextLookUpAsync(1);

        refresh.SetResult(s_second);
        while (!ReferenceEquals(await AtOnceAsync(), s_second))
        {
            await WaitForAsync(() => true); // a turn for the refresh's continuation
        }

        Assert.Equal(2, LookUps().Count); // one refresh for both logins
    }

    [Fact]
    public async Task AFailedRefresh_KeepsTheLastGoodAnswer_AndTheNextLoginTriesAgain()
    {
        await KnowAsync(s_first);
        _time.Advance(s_refresh);
        Assert.Same(s_first, await AtOnceAsync());
        var failing = await NextLookUpAsync(1);

        failing.SetException(new SocketException((int)SocketError.TryAgain));

        // Each login after the failure still gets the last answer, and one of them starts the next attempt.
        while (LookUps().Count < 3)
        {
            Assert.Same(s_first, await AtOnceAsync());
            await WaitForAsync(() => true);
        }
    }

    [Fact]
    public async Task AForgottenName_IsLookedUpAgain_AndTheLoginWaitsForTheNewAnswer()
    {
        await KnowAsync(s_first);

        _addresses.Forget("imap-backend");
        var next = _addresses.ResolveAsync("imap-backend", CancellationToken.None);
        var lookUp = await NextLookUpAsync(1);
        Assert.False(next.IsCompleted);
        lookUp.SetResult(s_second);

        Assert.Same(s_second, await next.AsTask().WaitAsync(s_limit));
    }

    [Fact]
    public async Task ANameWithoutAddresses_FailsAsNotFound_AndAWaitingLoginCanBeCancelled()
    {
        var empty = _addresses.ResolveAsync("imap-backend", CancellationToken.None);
        (await NextLookUpAsync(0)).SetResult([]);
        var error = await Assert.ThrowsAsync<SocketException>(() => empty.AsTask().WaitAsync(s_limit));
        Assert.Equal(SocketError.HostNotFound, error.SocketErrorCode);

        using var cancel = new CancellationTokenSource();
        var waiting = _addresses.ResolveAsync("imap-backend", cancel.Token);
        await NextLookUpAsync(1);
        cancel.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting.AsTask().WaitAsync(s_limit));
    }

    [Fact]
    public async Task TheCache_KeepsABoundedNumberOfNames()
    {
        var lookUps = new Dictionary<string, int>();
        var addresses = new BackendAddresses(_time, s_refresh, (host, _) =>
        {
            lock (lookUps)
            {
                lookUps[host] = lookUps.GetValueOrDefault(host) + 1;
            }

            return Task.FromResult(s_first);
        });

        for (var i = 0; i <= BackendAddresses.MaxNames; i++)
        {
            await addresses.ResolveAsync("backend-" + i, CancellationToken.None).AsTask().WaitAsync(s_limit);
        }

        await addresses.ResolveAsync("backend-0", CancellationToken.None).AsTask().WaitAsync(s_limit);
        Assert.Equal(2, lookUps["backend-0"]); // dropped when the cache was full, looked up again
    }

    /// <summary>The addresses a login gets without waiting (the cache knows some).</summary>
    private async Task<IPAddress[]> AtOnceAsync()
    {
        var resolving = _addresses.ResolveAsync("imap-backend", CancellationToken.None);
        Assert.True(resolving.IsCompletedSuccessfully);
        return await resolving;
    }

    private Task<IPAddress[]> LookUpFake(string host, CancellationToken cancellationToken)
    {
        Assert.Equal("imap-backend", host, ignoreCase: true);
        var lookUp = new TaskCompletionSource<IPAddress[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lookUps)
        {
            _lookUps.Add(lookUp);
        }

        return lookUp.Task;
    }

    private List<TaskCompletionSource<IPAddress[]>> LookUps()
    {
        lock (_lookUps)
        {
            return [.. _lookUps];
        }
    }

    /// <summary>The lookup number <paramref name="index"/> (from 0), once the cache has started it (it starts them off the caller's thread).</summary>
    private async Task<TaskCompletionSource<IPAddress[]>> NextLookUpAsync(int index)
    {
        await WaitForAsync(() => LookUps().Count > index);
        return LookUps()[index];
    }

    private async Task KnowAsync(IPAddress[] addresses)
    {
        var started = LookUps().Count;
        var resolving = _addresses.ResolveAsync("imap-backend", CancellationToken.None);
        (await NextLookUpAsync(started)).SetResult(addresses);
        Assert.Same(addresses, await resolving.AsTask().WaitAsync(s_limit));
    }

    /// <summary>
    /// Polls a condition the cache reaches on a thread-pool thread (nothing signals it), within the test's limit; at
    /// least one pause, so a continuation queued meanwhile gets its turn.
    /// </summary>
    private static async Task WaitForAsync(Func<bool> condition)
    {
        using var limit = new CancellationTokenSource(s_limit);
        do
        {
            await Task.Delay(5, limit.Token);
        }
        while (!condition());
    }
}
