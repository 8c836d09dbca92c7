using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace ImapProxy.Testing.Raw;

/// <summary>
/// A byte-exact IMAP client over a raw socket, for protocol checks MailKit would smooth over. Lines are read as
/// Latin-1 so every byte survives. Every read has a timeout: a test fails, it never hangs.
/// </summary>
public sealed class RawImapClient : IAsyncDisposable
{
    private static readonly TimeSpan s_defaultTimeout = TimeSpan.FromSeconds(30);

    private readonly Socket _socket;
    private Stream _stream;
    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;

    private readonly X509Certificate2? _serverCertificate;
    private bool _acceptAnyCertificate;

    private RawImapClient(Socket socket, X509Certificate2? serverCertificate)
    {
        _socket = socket;
        _serverCertificate = serverCertificate;
        _stream = new NetworkStream(socket, ownsSocket: false);
    }

    public static Encoding Latin1 { get; } = Encoding.Latin1;

    /// <param name="endPoint">Where to connect.</param>
    /// <param name="localAddress">Source address (e.g. 127.0.0.7) so tests look like distinct clients.</param>
    /// <param name="implicitTls">Start TLS at once (993-style).</param>
    /// <param name="serverCertificate">The self-signed certificate the server must present (pinned).</param>
    /// <param name="acceptAnyCertificate">Accept whatever certificate is shown (tests that inspect it).</param>
    public static async Task<RawImapClient> ConnectAsync(IPEndPoint endPoint, IPAddress? localAddress = null, bool implicitTls = false, X509Certificate2? serverCertificate = null, bool acceptAnyCertificate = false)
    {
        ArgumentNullException.ThrowIfNull(endPoint);
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        if (localAddress is not null)
        {
            socket.Bind(new IPEndPoint(localAddress, 0));
        }

        await socket.ConnectAsync(endPoint);
        var client = new RawImapClient(socket, serverCertificate) { _acceptAnyCertificate = acceptAnyCertificate };
        if (implicitTls)
        {
            await client.UpgradeToTlsAsync();
        }

        return client;
    }

    public X509Certificate? RemoteCertificate => (_stream as SslStream)?.RemoteCertificate;

    /// <summary>This client's address and port as the server sees them.</summary>
    public IPEndPoint LocalEndPoint => (IPEndPoint)_socket.LocalEndPoint!;

    public Task SendAsync(string text) => SendAsync(Latin1.GetBytes(text));

    public async Task SendAsync(byte[] bytes)
    {
        await _stream.WriteAsync(bytes);
        await _stream.FlushAsync();
    }

    /// <summary>One line without CRLF, or null at end of stream.</summary>
    public async Task<string?> ReadLineAsync(TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? s_defaultTimeout);
        while (true)
        {
            var lf = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            if (lf >= 0)
            {
                var length = lf - _start;
                if (length > 0 && _buffer[lf - 1] == (byte)'\r')
                {
                    length--;
                }

                var line = Latin1.GetString(_buffer, _start, length);
                _start = lf + 1;
                return line;
            }

            if (_start > 0)
            {
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }

            if (_end == _buffer.Length)
            {
                throw new InvalidOperationException("Line longer than the test client's buffer.");
            }

            int read;
            try
            {
                read = await _stream.ReadAsync(_buffer.AsMemory(_end), cts.Token);
            }
            catch (IOException)
            {
                read = 0;
            }

            if (read == 0)
            {
                return _end > _start ? Latin1.GetString(_buffer, _start, _end - _start) + "<EOF>" : null;
            }

            _end += read;
        }
    }

    /// <summary>Exactly <paramref name="count"/> bytes (a literal's body).</summary>
    public async Task<byte[]> ReadBytesAsync(int count, TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? s_defaultTimeout);
        var result = new byte[count];
        var filled = Math.Min(count, _end - _start);
        Buffer.BlockCopy(_buffer, _start, result, 0, filled);
        _start += filled;
        while (filled < count)
        {
            var read = await _stream.ReadAsync(result.AsMemory(filled), cts.Token);
            if (read == 0)
            {
                throw new EndOfStreamException();
            }

            filled += read;
        }

        return result;
    }

    /// <summary>
    /// The next line that is not an IDLE keepalive ("* OK Still here"): Dovecot aligns its keepalives per user and
    /// address, so the first may come at any moment of an IDLE, also right before the line a test waits for.
    /// </summary>
    public async Task<string?> ReadLineSkippingKeepalivesAsync(TimeSpan? timeout = null)
    {
        while (true)
        {
            var line = await ReadLineAsync(timeout);
            if (line != "* OK Still here")
            {
                return line;
            }
        }
    }

    /// <summary>Reads lines until the tagged response for <paramref name="tag"/>; returns all of them, tagged last.</summary>
    public async Task<List<string>> ReadUntilTaggedAsync(string tag, TimeSpan? timeout = null)
    {
        var lines = new List<string>();
        while (true)
        {
            var line = await ReadLineAsync(timeout) ?? throw new EndOfStreamException($"Connection closed before the response to {tag}. Got: {string.Join(" | ", lines)}");
            lines.Add(line);
            if (line.StartsWith(tag + " ", StringComparison.Ordinal))
            {
                return lines;
            }
        }
    }

    /// <summary>The next <paramref name="count"/> tagged responses (pipelined commands' answers), untagged lines skipped.</summary>
    public async Task<List<string>> ReadTaggedAsync(int count)
    {
        var tagged = new List<string>();
        while (tagged.Count < count)
        {
            var line = await ReadLineAsync() ?? throw new EndOfStreamException($"Connection closed after {tagged.Count} tagged responses: {string.Join(" | ", tagged)}");
            if (!line.StartsWith('*'))
            {
                tagged.Add(line);
            }
        }

        return tagged;
    }

    /// <summary>Sends a command and returns its responses (tagged last).</summary>
    public async Task<List<string>> CommandAsync(string tag, string command)
    {
        await SendAsync($"{tag} {command}\r\n");
        return await ReadUntilTaggedAsync(tag);
    }

    /// <summary>True if the server closes the connection (no further line) within the timeout.</summary>
    public async Task<bool> WaitForCloseAsync(TimeSpan? timeout = null)
    {
        while (true)
        {
            var line = await ReadLineAsync(timeout);
            if (line is null || line.EndsWith("<EOF>", StringComparison.Ordinal))
            {
                return true;
            }
        }
    }

    /// <summary>
    /// Ends this side of the connection, as a script does when its input runs out (ncat, nc -N): TLS sends its
    /// close_notify first; then the socket's sending side is shut down. Reading goes on.
    /// </summary>
    public async Task EndSendingAsync()
    {
        if (_stream is SslStream tls)
        {
            await tls.ShutdownAsync();
        }

        _socket.Shutdown(SocketShutdown.Send);
    }

    /// <summary>TLS handshake over the current connection (after "OK Begin TLS", or at once for 993).</summary>
    public async Task UpgradeToTlsAsync()
    {
        if (_end != _start)
        {
            throw new InvalidOperationException("Unread plaintext before the TLS handshake.");
        }

        var tls = new SslStream(_stream, leaveInnerStreamOpen: false, (_, certificate, _, errors) =>
            errors == SslPolicyErrors.None || _acceptAnyCertificate ||
            (_serverCertificate is not null && certificate is not null && certificate.GetRawCertData().AsSpan().SequenceEqual(_serverCertificate.RawData)));
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "localhost" });
        _stream = tls;
    }

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync();
        _socket.Dispose();
    }
}
