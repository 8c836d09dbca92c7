using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using ImapProxy.Configuration;
using Microsoft.Extensions.Options;

namespace ImapProxy.Directory.Consul;

/// <summary>Consul answered with an error status, or could not be reached at any configured address.</summary>
public sealed class ConsulException : Exception
{
    public ConsulException(string message)
        : base(message)
    {
    }

    public ConsulException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public ConsulException()
    {
    }
}

/// <summary>
/// A focused client of the Consul HTTP API: KV, service health, agent service registration, with blocking
/// queries. The HttpClient itself has no timeout: each request carries its own (a blocking query waits up to
/// <see cref="ConsulOptions.WaitTime"/> plus Consul's jitter, ordinary requests <see cref="ConsulOptions.RequestTimeout"/>).
/// Several agent addresses fail over in order.
/// </summary>
public sealed class ConsulClient
{
    /// <summary>Consul adds up to WaitTime/16 of jitter; the margin covers that and a slow network.</summary>
    private static readonly TimeSpan s_blockingMargin = TimeSpan.FromSeconds(10);

    private readonly HttpClient _http;
    private readonly ConsulOptions _options;
    private readonly Uri[] _addresses;
    private readonly string? _token;
    private readonly string _waitParameter;
    private int _current;

    public ConsulClient(HttpClient http, IOptions<ImapProxyOptions> options)
    {
        ArgumentNullException.ThrowIfNull(http);
        ArgumentNullException.ThrowIfNull(options);
        _http = http;
        _http.Timeout = Timeout.InfiniteTimeSpan;
        _options = options.Value.Consul;
        _addresses = _options.Addresses.Select(a => new Uri(a.EndsWith('/') ? a : a + "/")).ToArray();
        _token = _options.TokenFile is not null ? File.ReadAllText(_options.TokenFile).Trim() : _options.Token;
        _waitParameter = ((int)Math.Ceiling(_options.WaitTime.TotalSeconds)).ToString(CultureInfo.InvariantCulture) + "s";
    }

    /// <summary>The agent currently in use (for logs and readiness detail).</summary>
    public Uri CurrentAddress => _addresses[Volatile.Read(ref _current) % _addresses.Length];

    /// <summary>The KV key for a path below the configured prefix; each segment is URL-escaped.</summary>
    public string Key(string area, string name) =>
        $"{_options.KeyPrefix}/{area}/{Uri.EscapeDataString(name)}";

    /// <summary>GET /v1/kv/&lt;key&gt; (not blocking, stale reads allowed): the value, or null when absent.</summary>
    public async Task<ConsulResult<byte[]?>> GetValueAsync(string key, CancellationToken cancellationToken)
    {
        var (entries, index) = await SendAsync(
            HttpMethod.Get,
            $"v1/kv/{key}?stale",
            blocking: false,
            content: null,
            ConsulJsonContext.Default.ListConsulKvEntry,
            cancellationToken);
        var value = entries?.FirstOrDefault(e => e.Key == Uri.UnescapeDataString(key))?.DecodeValue();
        return new(value, index);
    }

    /// <summary>GET /v1/kv/&lt;prefix&gt;?recurse (blocking when <paramref name="index"/> is above 0). For small prefixes only.</summary>
    public async Task<ConsulResult<List<ConsulKvEntry>>> ListAsync(string prefix, ulong index, CancellationToken cancellationToken)
    {
        var (entries, newIndex) = await SendAsync(
            HttpMethod.Get,
            $"v1/kv/{prefix}?recurse=true{Blocking(index)}",
            blocking: index > 0,
            content: null,
            ConsulJsonContext.Default.ListConsulKvEntry,
            cancellationToken);
        return new(entries ?? [], newIndex);
    }

    /// <summary>GET /v1/health/service/&lt;name&gt;: every instance with its checks (blocking when index &gt; 0).</summary>
    public async Task<ConsulResult<List<ConsulServiceEntry>>> HealthServiceAsync(string service, ulong index, CancellationToken cancellationToken)
    {
        var (entries, newIndex) = await SendAsync(
            HttpMethod.Get,
            $"v1/health/service/{Uri.EscapeDataString(service)}?{Blocking(index).TrimStart('&')}",
            blocking: index > 0,
            content: null,
            ConsulJsonContext.Default.ListConsulServiceEntry,
            cancellationToken);
        return new(entries ?? [], newIndex);
    }

    /// <summary>PUT /v1/kv/&lt;key&gt; (with check-and-set when <paramref name="cas"/> is given); false if the CAS failed.</summary>
    public async Task<bool> PutAsync(string key, byte[] value, ulong? cas, CancellationToken cancellationToken)
    {
        var (result, _) = await SendAsync(
            HttpMethod.Put,
            $"v1/kv/{key}{(cas is { } c ? "?cas=" + c.ToString(CultureInfo.InvariantCulture) : "")}",
            blocking: false,
            new ByteArrayContent(value),
            ConsulJsonContext.Default.String,
            cancellationToken,
            rawBody: true);
        return result == "true";
    }

    /// <summary>DELETE /v1/kv/&lt;key&gt;.</summary>
    public async Task<bool> DeleteAsync(string key, CancellationToken cancellationToken)
    {
        var (result, _) = await SendAsync(HttpMethod.Delete, $"v1/kv/{key}", blocking: false, content: null, ConsulJsonContext.Default.String, cancellationToken, rawBody: true);
        return result == "true";
    }

    /// <summary>PUT /v1/agent/service/register.</summary>
    public Task RegisterServiceAsync(ConsulServiceRegistration registration, CancellationToken cancellationToken)
    {
        var json = JsonSerializer.SerializeToUtf8Bytes(registration, ConsulJsonContext.Default.ConsulServiceRegistration);
        var content = new ByteArrayContent(json);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        return SendAsync(HttpMethod.Put, "v1/agent/service/register", blocking: false, content, ConsulJsonContext.Default.String, cancellationToken, rawBody: true);
    }

    /// <summary>PUT /v1/agent/service/deregister/&lt;id&gt;.</summary>
    public Task DeregisterServiceAsync(string serviceId, CancellationToken cancellationToken) =>
        SendAsync(HttpMethod.Put, $"v1/agent/service/deregister/{Uri.EscapeDataString(serviceId)}", blocking: false, content: null, ConsulJsonContext.Default.String, cancellationToken, rawBody: true);

    private string Blocking(ulong index) =>
        (index > 0 ? "&index=" + index.ToString(CultureInfo.InvariantCulture) + "&wait=" + _waitParameter : "") +
        (_options.Datacenter is { Length: > 0 } dc ? "&dc=" + Uri.EscapeDataString(dc) : "");

    private async Task<(T? Value, ulong Index)> SendAsync<T>(
        HttpMethod method,
        string path,
        bool blocking,
        HttpContent? content,
        System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> typeInfo,
        CancellationToken cancellationToken,
        bool rawBody = false)
    {
        var body = content is null ? null : await content.ReadAsByteArrayAsync(cancellationToken);
        Exception? last = null;
        // Each address is tried once, starting with the one that worked last.
        for (var attempt = 0; attempt < _addresses.Length; attempt++)
        {
            var slot = Volatile.Read(ref _current);
            var baseAddress = _addresses[slot % _addresses.Length];
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(blocking ? _options.WaitTime + s_blockingMargin : _options.RequestTimeout);
            using var request = new HttpRequestMessage(method, new Uri(baseAddress, path));
            if (body is not null)
            {
                request.Content = new ByteArrayContent(body);
                request.Content.Headers.ContentType = content!.Headers.ContentType;
            }

            if (!string.IsNullOrEmpty(_token))
            {
                request.Headers.Add("X-Consul-Token", _token);
            }

            try
            {
                using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
                var index = response.Headers.TryGetValues("X-Consul-Index", out var values) &&
                    ulong.TryParse(values.FirstOrDefault(), NumberStyles.None, CultureInfo.InvariantCulture, out var parsed) ? parsed : 0;
                if (response.StatusCode == HttpStatusCode.NotFound && method == HttpMethod.Get)
                {
                    return (default, index);
                }

                if ((int)response.StatusCode >= 500)
                {
                    last = new ConsulException($"Consul at {baseAddress} answered {(int)response.StatusCode}.");
                    Interlocked.CompareExchange(ref _current, slot + 1, slot);
                    continue;
                }

                if (!response.IsSuccessStatusCode)
                {
                    var text = await response.Content.ReadAsStringAsync(timeout.Token);
                    throw new ConsulException($"Consul answered {(int)response.StatusCode} to {method} {Redact(path)}: {text.Trim()}");
                }

                if (rawBody)
                {
                    var text = await response.Content.ReadAsStringAsync(timeout.Token);
                    return ((T)(object)text.Trim(), index);
                }

                await using var stream = await response.Content.ReadAsStreamAsync(timeout.Token);
                try
                {
                    return (await JsonSerializer.DeserializeAsync(stream, typeInfo, timeout.Token), index);
                }
                catch (JsonException ex)
                {
                    throw new ConsulException($"Consul at {baseAddress} sent an unreadable answer to {Redact(path)}.", ex);
                }
            }
            catch (Exception ex) when (ex is HttpRequestException || (ex is OperationCanceledException && !cancellationToken.IsCancellationRequested))
            {
                last = ex;
                Interlocked.CompareExchange(ref _current, slot + 1, slot);
            }
        }

        throw new ConsulException("No Consul agent answered: " + last?.Message, last!);
    }

    /// <summary>Paths name users; errors say which request failed without the query string.</summary>
    private static string Redact(string path)
    {
        var query = path.IndexOf('?', StringComparison.Ordinal);
        return query < 0 ? path : path[..query];
    }
}
