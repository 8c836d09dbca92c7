using System.Net.Sockets;
using ImapProxy.Connections.Transport.Epoll;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace ImapProxy.Tests.Connections.Transport;

/// <summary>An epoll loop's work queue across its stop.</summary>
public sealed class EpollLoopTests
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task WorkThatMustEndSomething_QueuedWhileTheLoopStops_RunsAfterItsLastEvent_NeverBesideIt()
    {
        var engine = new EpollEngine(1, inlineContinuations: true, NullLogger.Instance);
        var loop = engine.Loops[0];
        using var inside = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var blockingDone = 0;

        try
        {
            // The thread is busy with work of its own (an event's handler, say) when the stop begins.
            await Task.Run(() => loop.Execute(
                _ =>
                {
                    inside.Set();
                    release.Wait(s_limit);
                    Volatile.Write(ref blockingDone, 1);
                },
                null));
            Assert.True(inside.Wait(s_limit));
            var disposing = Task.Run(engine.Dispose);
            Assert.True(SpinWait.SpinUntil(() => loop.IsStopping, s_limit));
            Assert.Throws<SocketException>(() => loop.Execute(static _ => { }, null));

            // A time limit expiring now must not run beside that work: it waits for the thread's end.
            var ran = new TaskCompletionSource<(bool OnLoop, bool AfterTheBusyWork)>(TaskCreationOptions.RunContinuationsAsynchronously);
            loop.ExecuteOrAfterStop(_ => ran.TrySetResult((loop.IsCurrent, Volatile.Read(ref blockingDone) == 1)), null);
            Assert.False(ran.Task.IsCompleted);

            release.Set();
            var (onLoop, afterTheBusyWork) = await ran.Task.WaitAsync(s_limit);
            Assert.True(onLoop);
            Assert.True(afterTheBusyWork);
            await disposing.WaitAsync(s_limit);

            // Once the thread has ended, such work runs at once on its caller.
            var ranNow = false;
            loop.ExecuteOrAfterStop(_ => ranNow = true, null);
            Assert.True(ranNow);
        }
        finally
        {
            release.Set(); // a failed assertion must not leave the thread waiting
            engine.Dispose();
        }
    }
}
