using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using ImapProxy.Backends;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace ImapProxy.Tests.Backends;

/// <summary>
/// Backends' host names looked up once per refresh interval. The resolver is a fake (each lookup waits for the test
/// to answer it), so when lookups happen and what a login gets meanwhile is the point. The fake's answers run the
/// cache's own continuation at once, so the cache has taken an answer in when the test's call to give it returns.
/// </summary>
public sealed class BackendAddressesTests
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan s_refresh = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan s_wait = TimeSpan.FromSeconds(5); // how long a login waits for a lookup
    private static readonly IPAddress[] s_first = [IPAddress.Parse("10.0.0.1")];
    private static readonly IPAddress[] s_second = [IPAddress.Parse("10.0.0.2"), IPAddress.Parse("10.0.0.3")];

    private readonly FakeTimeProvider _time = new();
    private readonly Channel<TaskCompletionSource<IPAddress[]>> _lookUps = Channel.CreateUnbounded<TaskCompletionSource<IPAddress[]>>();
    private int _lookUpCount;
    private readonly BackendAddresses _addresses;

    public BackendAddressesTests() => _addresses = new BackendAddresses(_time, s_refresh, LookUpFake);

    [Fact]
    public async Task AName_IsLookedUpOnce_ForLoginsWaitingTogether_AndThenKnownUntilTheRefresh()
    {
        var first = Resolve();
        var second = _addresses.ResolveAsync("IMAP-Backend", s_wait, CancellationToken.None); // names are case-insensitive
        var lookUp = await NextLookUpAsync();
        Assert.False(first.IsCompleted);

        await lookUp.AnswerAsync(s_first);

        Assert.Same(s_first, await first.AsTask().WaitAsync(s_limit));
        Assert.Same(s_first, await second.AsTask().WaitAsync(s_limit));
        _time.Advance(s_refresh - TimeSpan.FromSeconds(1));
        Assert.Same(s_first, await AtOnceAsync());
        Assert.Equal(1, LookUpCount);
    }

    [Fact]
    public async Task AfterTheRefreshInterval_LoginsGoOnWithTheLastAnswer_WhileOneLookUpReplacesIt()
    {
        await KnowAsync(s_first);
        _time.Advance(s_refresh);

        Assert.Same(s_first, await AtOnceAsync());
        Assert.Same(s_first, await AtOnceAsync());
        var refresh = await NextLookUpAsync();

        await refresh.AnswerAsync(s_second);
        Assert.Same(s_second, await AtOnceAsync());
        Assert.Equal(2, LookUpCount); // one refresh for both logins
    }

    [Fact]
    public async Task AFailedRefresh_KeepsTheLastGoodAnswer_AndIsTriedAgainAfterAPause()
    {
        await KnowAsync(s_first);
        _time.Advance(s_refresh);
        Assert.Same(s_first, await AtOnceAsync());
        await (await NextLookUpAsync()).FailAsync(new SocketException((int)SocketError.TryAgain));

        // The resolver is not asked at every login while it fails: only once the pause is over.
        Assert.Same(s_first, await AtOnceAsync());
        Assert.False(_addresses.IsLookingUp("imap-backend"));
        _time.Advance(BackendAddresses.RetryAfterFailure);
        Assert.Same(s_first, await AtOnceAsync());
        Assert.True(_addresses.IsLookingUp("imap-backend"));
        await (await NextLookUpAsync()).AnswerAsync(s_second);
        Assert.False(_addresses.IsLookingUp("imap-backend"));
        Assert.Same(s_second, await AtOnceAsync());
    }

    [Fact]
    public async Task ALastAnswer_IsDropped_WhenTheNameIsGone_OrTheResolverHasFailedForLong()
    {
        // Gone: the next logins fail at once (no lookup each) until the pause is over.
        await KnowAsync(s_first);
        _time.Advance(s_refresh);
        Assert.Same(s_first, await AtOnceAsync());
        await (await NextLookUpAsync()).FailAsync(new SocketException((int)SocketError.HostNotFound));
        var gone = Resolve();
        Assert.True(gone.IsFaulted);
        Assert.Equal(SocketError.HostNotFound, (await Assert.ThrowsAsync<SocketException>(() => gone.AsTask())).SocketErrorCode);
        Assert.False(_addresses.IsLookingUp("imap-backend"));

        // Back again after the pause: the login waits for the lookup.
        _time.Advance(BackendAddresses.RetryAfterFailure);
        var back = Resolve();
        await (await NextLookUpAsync()).AnswerAsync(s_second);
        Assert.Same(s_second, await back.AsTask().WaitAsync(s_limit));

        // A resolver failing for StaleLimit refresh intervals: the answer goes too.
        _time.Advance(s_refresh * BackendAddresses.StaleLimit);
        Assert.Same(s_second, await AtOnceAsync());
        await (await NextLookUpAsync()).FailAsync(new SocketException((int)SocketError.TryAgain));
        var dropped = Resolve();
        Assert.True(dropped.IsFaulted);
        Assert.Equal(SocketError.TryAgain, (await Assert.ThrowsAsync<SocketException>(() => dropped.AsTask())).SocketErrorCode);
    }

    [Fact]
    public async Task AForgottenName_IsLookedUpAgain_AndTheLoginWaitsForTheNewAnswer_UnlessANewerAnswerCameMeanwhile()
    {
        await KnowAsync(s_first);

        _addresses.Forget("imap-backend", s_second); // not the answer it holds: kept
        Assert.Same(s_first, await AtOnceAsync());

        _addresses.Forget("imap-backend", s_first);
        var next = Resolve();
        var lookUp = await NextLookUpAsync();
        Assert.False(next.IsCompleted);
        await lookUp.AnswerAsync(s_second);

        Assert.Same(s_second, await next.AsTask().WaitAsync(s_limit));
    }

    [Fact]
    public async Task ANameWithoutAddresses_FailsAsNotFound_AndAWaitingLoginCanGiveUp()
    {
        var empty = Resolve();
        await (await NextLookUpAsync()).AnswerAsync([]);
        var error = await Assert.ThrowsAsync<SocketException>(() => empty.AsTask().WaitAsync(s_limit));
        Assert.Equal(SocketError.HostNotFound, error.SocketErrorCode);
        _time.Advance(BackendAddresses.RetryAfterFailure);

        using var cancel = new CancellationTokenSource();
        var cancelled = _addresses.ResolveAsync("imap-backend", s_wait, cancel.Token);
        var timedOut = Resolve();
        await NextLookUpAsync();
        cancel.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled.AsTask().WaitAsync(s_limit));
        _time.Advance(s_wait);
        await Assert.ThrowsAsync<TimeoutException>(() => timedOut.AsTask().WaitAsync(s_limit));
    }

    [Fact]
    public async Task ANameTheResolverRefuses_IsALookUpThatFailed()
    {
        var refused = Resolve();
        await (await NextLookUpAsync()).FailAsync(new ArgumentException("The hostname is not valid.", "hostNameOrAddress"));

        var error = await Assert.ThrowsAsync<SocketException>(() => refused.AsTask().WaitAsync(s_limit));
        Assert.Equal(SocketError.HostNotFound, error.SocketErrorCode);
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
            await addresses.ResolveAsync("backend-" + i, s_wait, CancellationToken.None).AsTask().WaitAsync(s_limit);
        }

        await addresses.ResolveAsync("backend-0", s_wait, CancellationToken.None).AsTask().WaitAsync(s_limit);
        Assert.Equal(2, lookUps["backend-0"]); // dropped when the cache was full, looked up again
    }

    private ValueTask<IPAddress[]> Resolve() => _addresses.ResolveAsync("imap-backend", s_wait, CancellationToken.None);

    /// <summary>The addresses a login gets without waiting (the cache knows some).</summary>
    private async Task<IPAddress[]> AtOnceAsync()
    {
        var resolving = Resolve();
        Assert.True(resolving.IsCompletedSuccessfully);
        return await resolving;
    }

    private int LookUpCount => Volatile.Read(ref _lookUpCount);

    private Task<IPAddress[]> LookUpFake(string host, CancellationToken cancellationToken)
    {
        Assert.Equal("imap-backend", host, ignoreCase: true);
        var lookUp = new TaskCompletionSource<IPAddress[]>();
        Interlocked.Increment(ref _lookUpCount);
        Assert.True(_lookUps.Writer.TryWrite(lookUp));
        return lookUp.Task;
    }

    /// <summary>The next lookup, once the cache has started it (it asks the resolver on a thread-pool thread).</summary>
    private async Task<LookUp> NextLookUpAsync()
    {
        var answer = await _lookUps.Reader.ReadAsync().AsTask().WaitAsync(s_limit);

        // Started by this test's own call into the cache, which set it before returning.
        var underWay = _addresses.LookUpUnderWay("imap-backend");
        Assert.NotNull(underWay);
        return new LookUp(answer, underWay);
    }

    /// <summary>
    /// A lookup the resolver fake was asked for. Each answer returns once the cache has taken it in: the cache may
    /// still be on its way from asking the resolver to awaiting the answer when the test gives it, and then takes it in
    /// on its own thread.
    /// </summary>
    private sealed class LookUp(TaskCompletionSource<IPAddress[]> answer, Task underWay)
    {
        public Task AnswerAsync(IPAddress[] addresses)
        {
            answer.SetResult(addresses);
            return TakenInAsync();
        }

        public Task FailAsync(Exception error)
        {
            answer.SetException(error);
            return TakenInAsync();
        }

        private async Task TakenInAsync() => await Task.WhenAny(underWay).WaitAsync(s_limit); // its failure is the cache's to report
    }

    private async Task KnowAsync(IPAddress[] addresses)
    {
        var resolving = Resolve();
        await (await NextLookUpAsync()).AnswerAsync(addresses);
        Assert.Same(addresses, await resolving.AsTask().WaitAsync(s_limit));
    }
}
