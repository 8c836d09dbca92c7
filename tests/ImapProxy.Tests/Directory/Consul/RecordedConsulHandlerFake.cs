using System.Collections.Concurrent;
using System.Net;
using System.Text;
using System.Threading.Channels;

namespace ImapProxy.Tests.Directory.Consul;

/// <summary>
/// A fake Consul agent at the HTTP level, for edge cases a real agent cannot be made to produce on demand
/// (an index that goes backwards, 500s): answers are recorded Consul responses queued per path; every request
/// is recorded and announced so tests wait on it. A request to a path with nothing queued waits until an answer
/// is queued for it or it is cancelled, like a blocking query waiting for a change.
/// </summary>
internal sealed class RecordedConsulHandlerFake : HttpMessageHandler
{
    private readonly ConcurrentDictionary<string, Answers> _answers = new();

    public Channel<Uri> Requests { get; } = Channel.CreateUnbounded<Uri>();

    public void Enqueue(string path, HttpStatusCode status, string body, ulong index)
    {
        var answers = _answers.GetOrAdd(path, _ => new());
        answers.Queue.Enqueue((status, body, index));
        answers.Ready.Release();
    }

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var uri = request.RequestUri!;
        await Requests.Writer.WriteAsync(uri, cancellationToken);
        var answers = _answers.GetOrAdd(uri.AbsolutePath, _ => new());
        await answers.Ready.WaitAsync(cancellationToken);
        answers.Queue.TryDequeue(out var answer);
        var response = new HttpResponseMessage(answer.Status) { Content = new StringContent(answer.Body, Encoding.UTF8, "application/json") };
        response.Headers.Add("X-Consul-Index", answer.Index.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return response;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            foreach (var answers in _answers.Values)
            {
                answers.Ready.Dispose();
            }
        }

        base.Dispose(disposing);
    }

    /// <summary>One path's queued answers; the semaphore counts them, so a request takes exactly one.</summary>
    private sealed class Answers
    {
        public ConcurrentQueue<(HttpStatusCode Status, string Body, ulong Index)> Queue { get; } = new();

        public SemaphoreSlim Ready { get; } = new(0);
    }
}
