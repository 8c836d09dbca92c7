using System.Collections.Concurrent;
using System.Net;
using System.Text;
using System.Threading.Channels;

namespace ImapProxy.Tests.Directory.Consul;

/// <summary>
/// A fake Consul agent at the HTTP level, for edge cases a real agent cannot be made to produce on demand
/// (an index that goes backwards, 500s): answers are recorded Consul responses queued per path; every request
/// is recorded and announced so tests wait on it. Paths with nothing queued hang until cancelled, like an
/// idle blocking query.
/// </summary>
internal sealed class RecordedConsulHandlerFake : HttpMessageHandler
{
    private readonly ConcurrentDictionary<string, ConcurrentQueue<(HttpStatusCode Status, string Body, ulong Index)>> _answers = new();

    public Channel<Uri> Requests { get; } = Channel.CreateUnbounded<Uri>();

    public void Enqueue(string path, HttpStatusCode status, string body, ulong index) =>
        _answers.GetOrAdd(path, _ => new()).Enqueue((status, body, index));

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var uri = request.RequestUri!;
        await Requests.Writer.WriteAsync(uri, cancellationToken);
        if (_answers.TryGetValue(uri.AbsolutePath, out var queue) && queue.TryDequeue(out var answer))
        {
            var response = new HttpResponseMessage(answer.Status) { Content = new StringContent(answer.Body, Encoding.UTF8, "application/json") };
            response.Headers.Add("X-Consul-Index", answer.Index.ToString(System.Globalization.CultureInfo.InvariantCulture));
            return response;
        }

        await Task.Delay(Timeout.Infinite, cancellationToken);
        throw new OperationCanceledException(cancellationToken);
    }
}
