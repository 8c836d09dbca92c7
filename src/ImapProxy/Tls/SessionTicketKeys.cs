using System.Security.Cryptography;

namespace ImapProxy.Tls;

/// <summary>One key that seals session tickets: its name (sent in the ticket), the HMAC-SHA256 key and the AES-256 key.</summary>
internal sealed class SessionTicketKey
{
    public const int NameLength = 16;
    public const int SecretLength = 32;

    /// <summary>A key file's line: the name, the HMAC key, the AES key (nginx's 80-byte layout).</summary>
    public const int EncodedLength = NameLength + 2 * SecretLength;

    private SessionTicketKey(ReadOnlySpan<byte> encoded, long created)
    {
        Name = encoded[..NameLength].ToArray();
        HmacKey = encoded[NameLength..(NameLength + SecretLength)].ToArray();
        AesKey = encoded[(NameLength + SecretLength)..].ToArray();
        Created = created;
    }

    public byte[] Name { get; }

    public byte[] HmacKey { get; }

    public byte[] AesKey { get; }

    /// <summary>When it was made (a <see cref="TimeProvider"/> timestamp); 0 for a key from a file.</summary>
    public long Created { get; }

    public static SessionTicketKey Random(long created)
    {
        Span<byte> encoded = stackalloc byte[EncodedLength];
        RandomNumberGenerator.Fill(encoded);
        var key = new SessionTicketKey(encoded, created);
        CryptographicOperations.ZeroMemory(encoded);
        return key;
    }

    public static SessionTicketKey Decode(ReadOnlySpan<byte> encoded) =>
        encoded.Length == EncodedLength ? new(encoded, 0) : throw new ArgumentException($"a key is {EncodedLength} bytes", nameof(encoded));
}

/// <summary>
/// The keys that seal the TLS session tickets of the proxy's own contexts (TLS 1.3 and 1.2; see
/// <see cref="TlsServerContext"/>): the first seals new tickets, every key opens them. A ticket opened by an older key
/// is answered with a new one. Shared by every context of a certificate provider, so a certificate reload does not
/// cost each client a full handshake.
/// </summary>
/// <remarks>
/// <para>
/// Without a file, the keys are the process's own: a new one every <c>Tls:SessionTicketKeyRotation</c>, and the one
/// before it still opens tickets. A ticket therefore opens for at most two rotations, and a key that leaks exposes at
/// most that much of the sessions resumed with it (forward secrecy of resumption). Whatever the keys, OpenSSL resumes
/// no session older than its session lifetime (two hours).
/// </para>
/// <para>
/// With a file (<c>Tls:SessionTicketKeyFile</c>, one key per line in base64, the sealing key first), every replica that
/// reads the same file opens every other's tickets: a client that comes back through another pod of the Service
/// resumes instead of making a full handshake. Rotation is then the operator's, in three steps, because each pod sees
/// a Secret update at its own time: add the new key second (it only opens tickets); once every pod has it, move it
/// first (it seals); two hours later, drop the old one. A key put first at once would seal tickets that the pods not
/// yet updated cannot open. The keys are read with the certificate (on a change, at most every
/// <c>Tls:ReloadCheckInterval</c>).
/// </para>
/// <para>
/// The key bytes live in managed arrays for as long as a context may use them; those of rotated-out keys are left to
/// the garbage collector, not cleared.
/// </para>
/// </remarks>
internal sealed class SessionTicketKeys
{
    private readonly TimeProvider? _time;
    private readonly long _rotationTicks;
    private readonly Lock _rotateLock = new();
    private volatile SessionTicketKey[] _keys;
    private long _sealed;

    private SessionTicketKeys(SessionTicketKey[] keys, TimeProvider? time, TimeSpan rotation)
    {
        _keys = keys;
        _time = time;
        _rotationTicks = time is null ? 0 : (long)(rotation.TotalSeconds * time.TimestampFrequency);
    }

    /// <summary>Where the keys come from, for the log: "file PATH (N keys)" or "rotated every ...".</summary>
    public string Source { get; private init; } = "";

    /// <summary>The process's own keys, a new one every <paramref name="rotation"/>.</summary>
    public static SessionTicketKeys Rotating(TimeSpan rotation, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(time);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(rotation, TimeSpan.Zero);
        return new([SessionTicketKey.Random(time.GetTimestamp())], time, rotation) { Source = $"the process itself, a new one every {rotation}" };
    }

    /// <summary>
    /// The keys of <paramref name="path"/>: one per line, base64 of 80 bytes (<c>openssl rand 80 | base64 -w0</c>), the
    /// sealing key first; empty lines and lines starting with '#' are skipped. Throws <see cref="FormatException"/>
    /// naming the line (never its content) when a line is not a key, <see cref="IOException"/> when the file cannot be read.
    /// </summary>
    public static SessionTicketKeys FromFile(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var keys = new List<SessionTicketKey>();
        var number = 0;
        Span<byte> encoded = stackalloc byte[SessionTicketKey.EncodedLength + 3];
        try
        {
            foreach (var line in File.ReadLines(path))
            {
                number++;
                var text = line.AsSpan().Trim();
                if (text.IsEmpty || text[0] == '#')
                {
                    continue;
                }

                if (!Convert.TryFromBase64Chars(text, encoded, out var length) || length != SessionTicketKey.EncodedLength)
                {
                    throw new FormatException($"{path}, line {number}: not a session ticket key (base64 of {SessionTicketKey.EncodedLength} bytes)");
                }

                var key = SessionTicketKey.Decode(encoded[..length]);
                if (keys.Exists(other => other.Name.AsSpan().SequenceEqual(key.Name)))
                {
                    throw new FormatException($"{path}, line {number}: a second key with the name of an earlier one");
                }

                keys.Add(key);
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(encoded);
        }

        return keys.Count == 0
            ? throw new FormatException($"{path}: no session ticket key")
            : new([.. keys], time: null, TimeSpan.Zero) { Source = $"{path}, {keys.Count} of them" };
    }

    /// <summary>How many tickets these keys sealed (for tests and diagnostics).</summary>
    public long TicketsSealed => Interlocked.Read(ref _sealed);

    /// <summary>The key that seals a new ticket (rotated first when it is due).</summary>
    public SessionTicketKey ForSealing()
    {
        Interlocked.Increment(ref _sealed);
        var keys = _keys;
        if (_time is null || _time.GetTimestamp() - keys[0].Created < _rotationTicks)
        {
            return keys[0];
        }

        lock (_rotateLock)
        {
            keys = _keys;
            var now = _time.GetTimestamp();
            if (now - keys[0].Created >= _rotationTicks)
            {
                keys = [SessionTicketKey.Random(now), keys[0]];
                _keys = keys;
            }

            return keys[0];
        }
    }

    /// <summary>
    /// The key named <paramref name="name"/>, or null (the ticket is ignored: a full handshake); <paramref name="renew"/>
    /// says the ticket should be replaced by one of the sealing key. A rotating key older than two rotations opens
    /// nothing even before the next rotation drops it.
    /// </summary>
    public SessionTicketKey? ForOpening(ReadOnlySpan<byte> name, out bool renew)
    {
        var keys = _keys;
        for (var i = 0; i < keys.Length; i++)
        {
            var key = keys[i];
            if (key.Name.AsSpan().SequenceEqual(name))
            {
                var age = _time is null ? 0 : _time.GetTimestamp() - key.Created; // a file's keys do not age
                if (age >= 2 * _rotationTicks && _time is not null)
                {
                    break;
                }

                renew = i > 0 || (_time is not null && age >= _rotationTicks);
                return key;
            }
        }

        renew = false;
        return null;
    }
}
