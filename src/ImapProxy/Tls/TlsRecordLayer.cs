using System.Net.Security;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace ImapProxy.Tls;

/// <summary>What <see cref="TlsRecordLayer.Read"/> found when it returned no plaintext.</summary>
internal enum TlsReadStatus
{
    /// <summary>More ciphertext is needed.</summary>
    WantRead,

    /// <summary>The peer sent close_notify.</summary>
    Closed,

    /// <summary>A bad record, an alert, or anything else that ends the connection.</summary>
    Failed,
}

/// <summary>What <see cref="TlsRecordLayer.Handshake"/> came to.</summary>
internal enum TlsHandshakeStatus
{
    /// <summary>The handshake is done (what it wants sent is in the output).</summary>
    Done,

    /// <summary>More ciphertext from the client is needed (after what the output holds is sent).</summary>
    WantRead,

    /// <summary>The handshake failed (an alert for the client may be in the output).</summary>
    Failed,
}

/// <summary>
/// A TLS connection's record layer driven directly: ciphertext goes in and out through the connection's memory BIOs,
/// plaintext through SSL_read and SSL_write. Either a connection of the proxy's own (<see cref="Accept"/>, handshake
/// and all, see <see cref="TlsServerStream"/>), or the one under an authenticated <see cref="SslStream"/>, taken over
/// for a splice on one engine thread (<see cref="TryTakeOver"/>). That stream rests meanwhile; it can write again
/// after <see cref="Release"/> (OpenSSL keeps the connection's state), or be let go of altogether: the owner then
/// writes through this layer and frees the connection with <see cref="Close"/>.
/// </summary>
/// <remarks>
/// The runtime's memory BIOs never give memory back: each keeps a buffer as large as the most it ever held, so a
/// session that once fetched a large message keeps about 16 KB in each for the rest of its life (measured, 300
/// idle TLS sessions after a 5 MB FETCH and a 20 KB APPEND: 50 KB of malloc'd memory each against 17 KB without).
/// <see cref="Trim"/> swaps an empty buffer larger than <see cref="KeepUpTo"/> for a fresh one that has none: at the
/// start of the splice what the handshake and the login left (about 1.2 KB a session in malloc's statistics, 3,000
/// idle TLS sessions: 14.3 KB of malloc'd memory each against 15.7 KB), later what a large command or answer grew. Not
/// thread-safe: one thread, between the handshake and the stream's next use.
/// </remarks>
internal sealed unsafe class TlsRecordLayer
{
    /// <summary>
    /// An empty BIO buffer up to this size may stay between commands: the records of short commands and answers (NOOP,
    /// IDLE, DONE, flag updates) fit in it, and giving it back after each of them would cost two allocations and five
    /// calls into OpenSSL every time (about 1% of the CPU of TLS NOOPs, profiled). Larger answers (a SELECT's, about
    /// 700 bytes) are given back: with 1 KB here, sessions parked in IDLE after a SELECT kept about 0.6 KB each.
    /// </summary>
    public const int KeepUpTo = 256;

    // SslStream's buffer of received bytes: ciphertext not yet decrypted, and plaintext not yet read. The splice may
    // take over only when it is empty, or those bytes would be lost.
    private static readonly FieldInfo? s_buffer = typeof(SslStream).GetField("_buffer", BindingFlags.Instance | BindingFlags.NonPublic);
    private static readonly FieldInfo? s_arrayBuffer = s_buffer?.FieldType.GetField("_buffer", BindingFlags.Instance | BindingFlags.NonPublic);
    private static readonly FieldInfo? s_activeStart = s_arrayBuffer?.FieldType.GetField("_activeStart", BindingFlags.Instance | BindingFlags.NonPublic);
    private static readonly FieldInfo? s_availableStart = s_arrayBuffer?.FieldType.GetField("_availableStart", BindingFlags.Instance | BindingFlags.NonPublic);

    private readonly SafeHandle _handle;
    private readonly nint _ssl;
    private readonly nint _readBio;
    private readonly nint _writeBio;
    private bool _released;

    private TlsRecordLayer(SafeHandle handle, nint ssl, nint readBio, nint writeBio)
    {
        _handle = handle;
        _ssl = ssl;
        _readBio = readBio;
        _writeBio = writeBio;
    }

    /// <summary>
    /// A new server connection of <paramref name="context"/>, over memory BIOs, before its handshake (see
    /// <see cref="Handshake"/>); <see cref="Close"/> frees it. Throws <see cref="CryptographicException"/> when
    /// OpenSSL cannot make one (out of memory), <see cref="ObjectDisposedException"/> when the context is disposed.
    /// </summary>
    public static TlsRecordLayer Accept(TlsServerContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var added = false;
        try
        {
            context.DangerousAddRef(ref added);
            OpenSslNative.ErrClearError();
            var ssl = OpenSslNative.SslNew(context.DangerousGetHandle());
            if (ssl == 0)
            {
                throw new CryptographicException(OpenSslNative.TakeErrorText("SSL_new failed"));
            }

            var handle = new ConnectionHandle();
            handle.Own(ssl);
            var readBio = OpenSslNative.BioNewMemory();
            var writeBio = OpenSslNative.BioNewMemory();
            if (readBio == 0 || writeBio == 0)
            {
                OpenSslNative.BioFree(readBio);
                OpenSslNative.BioFree(writeBio);
                handle.Dispose();
                throw new CryptographicException(OpenSslNative.TakeErrorText("BIO_new failed"));
            }

            OpenSslNative.SslSetBio(ssl, readBio, writeBio);
            OpenSslNative.SslSetAcceptState(ssl);
            var referenced = false;
            handle.DangerousAddRef(ref referenced); // the layer's, until Release, as for a taken-over connection
            return new TlsRecordLayer(handle, ssl, readBio, writeBio);
        }
        finally
        {
            if (added)
            {
                context.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// The record layer of an authenticated stream that has nothing buffered, with a reference on its handle until
    /// <see cref="Release"/>; null (and why) when the stream cannot be taken over.
    /// </summary>
    public static TlsRecordLayer? TryTakeOver(SslStream stream, out string? reason)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (OpenSslNative.GetSslHandle(stream) is not { } handle)
        {
            reason = OpenSslNative.UnavailableReason ?? "the stream has no OpenSSL handle";
            return null;
        }

        if (BufferedBytes(stream) is not { } buffered)
        {
            reason = "SslStream's receive buffer cannot be inspected in this runtime";
            return null;
        }

        if (buffered != 0)
        {
            reason = "SslStream holds received bytes";
            return null;
        }

        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            var ssl = handle.DangerousGetHandle();
            var readBio = OpenSslNative.SslGetReadBio(ssl);
            var writeBio = OpenSslNative.SslGetWriteBio(ssl);
            if (handle.IsClosed || readBio == 0 || writeBio == 0
                || OpenSslNative.BioMethodType(readBio) != OpenSslNative.BioTypeMem || OpenSslNative.BioMethodType(writeBio) != OpenSslNative.BioTypeMem)
            {
                reason = "the connection does not run over memory BIOs";
                return null;
            }

            // A TLS 1.2 client's renegotiation would run here, on the engine thread, in the middle of the splice's
            // writes: refused instead (OpenSSL 3 refuses client-initiated renegotiation anyway; 1.1.1 does not).
            OpenSslNative.SslSetOptions(ssl, OpenSslNative.SslOpNoRenegotiation);
            reason = null;
            added = false; // kept until Release
            return new TlsRecordLayer(handle, ssl, readBio, writeBio);
        }
        catch (ObjectDisposedException)
        {
            reason = "the stream is closed";
            return null;
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>Whether the handshake resumed an earlier session (a session ticket).</summary>
    public bool IsResumed => OpenSslNative.SslSessionReused(_ssl);

    /// <summary>The negotiated protocol ("TLSv1.3").</summary>
    public string Protocol => OpenSslNative.SslGetVersion(_ssl);

    /// <summary>Whether the negotiated protocol is TLS 1.3 (once the handshake is done).</summary>
    public bool IsTls13 => OpenSslNative.SslVersion(_ssl) == OpenSslNative.Tls13Version;

    /// <summary>Whether what was fed holds plaintext not read yet, decrypted or not (a whole record, or part of one).</summary>
    public bool HasPendingInput => OpenSslNative.SslPending(_ssl) > 0 || PendingInput > 0;

    /// <summary>
    /// Goes on with the server side of the handshake over what was fed; what it wants sent is then in the output
    /// (also when it failed: the alert). <paramref name="error"/> is OpenSSL's reason for a failure.
    /// </summary>
    public TlsHandshakeStatus Handshake(out string? error)
    {
        OpenSslNative.ErrClearError();
        var result = OpenSslNative.SslDoHandshake(_ssl);
        error = null;
        if (result == 1)
        {
            return TlsHandshakeStatus.Done;
        }

        var code = OpenSslNative.SslGetError(_ssl, result);
        if (code == OpenSslNative.SslErrorWantRead)
        {
            return TlsHandshakeStatus.WantRead;
        }

        error = OpenSslNative.TakeErrorText(code == OpenSslNative.SslErrorZeroReturn ? "closed by the client" : $"SSL error {code}");
        return TlsHandshakeStatus.Failed;
    }

    /// <summary>Bytes of ciphertext waiting to go to the peer.</summary>
    public int PendingOutput => (int)OpenSslNative.BioCtrl(_writeBio, OpenSslNative.BioCtrlPending, 0, null);

    /// <summary>Bytes of ciphertext from the peer not decrypted yet (the start of a record).</summary>
    public int PendingInput => (int)OpenSslNative.BioCtrl(_readBio, OpenSslNative.BioCtrlPending, 0, null);

    /// <summary>Ciphertext from the peer, for the next <see cref="Read"/>s. False if OpenSSL could not take it.</summary>
    public bool Feed(ReadOnlySpan<byte> ciphertext)
    {
        fixed (byte* bytes = ciphertext)
        {
            return OpenSslNative.BioWrite(_readBio, bytes, ciphertext.Length) == ciphertext.Length;
        }
    }

    /// <summary>Plaintext decrypted from what was fed: the count, or 0 with why there is none.</summary>
    public int Read(Span<byte> plaintext, out TlsReadStatus status)
    {
        int read;
        fixed (byte* bytes = plaintext)
        {
            OpenSslNative.ErrClearError();
            read = OpenSslNative.SslRead(_ssl, bytes, plaintext.Length);
        }

        if (read > 0)
        {
            status = TlsReadStatus.WantRead;
            return read;
        }

        var error = OpenSslNative.SslGetError(_ssl, read);
        status = error switch
        {
            OpenSslNative.SslErrorWantRead => TlsReadStatus.WantRead,
            OpenSslNative.SslErrorZeroReturn => TlsReadStatus.Closed,
            _ => TlsReadStatus.Failed,
        };
        if (status == TlsReadStatus.Failed)
        {
            OpenSslNative.ErrClearError(); // nothing of this connection's may be left for another one on this thread
        }

        return 0;
    }

    /// <summary>Encrypts all of <paramref name="plaintext"/> into records waiting to go out. False on failure.</summary>
    public bool Write(ReadOnlySpan<byte> plaintext)
    {
        fixed (byte* bytes = plaintext)
        {
            var offset = 0;
            while (offset < plaintext.Length)
            {
                OpenSslNative.ErrClearError();
                var written = OpenSslNative.SslWrite(_ssl, bytes + offset, plaintext.Length - offset);
                if (written <= 0)
                {
                    OpenSslNative.ErrClearError();
                    return false;
                }

                offset += written;
            }
        }

        return true;
    }

    /// <summary>Takes ciphertext waiting to go out: the count (0 when there is none).</summary>
    public int TakeOutput(Span<byte> ciphertext)
    {
        fixed (byte* bytes = ciphertext)
        {
            return Math.Max(OpenSslNative.BioRead(_writeBio, bytes, ciphertext.Length), 0);
        }
    }

    /// <summary>
    /// Gives back the BIOs' buffers that are empty and larger than <see cref="KeepUpTo"/>. False if one of them is
    /// still that large (it holds bytes: try again later).
    /// </summary>
    public bool Trim() => TrimBio(_readBio) & TrimBio(_writeBio);

    /// <summary>The end of the takeover: the handle reference goes; nothing here may be used afterwards.</summary>
    public void Release()
    {
        if (!_released)
        {
            _released = true;
            _handle.DangerousRelease();
        }
    }

    /// <summary>
    /// The end of the connection, for an owner that let go of its stream: the reference goes and the handle is
    /// disposed, which frees the OpenSSL connection now (as disposing the stream would have). A stream that is still
    /// around, disposed or finalized later, finds the handle disposed already. Nothing here may be used afterwards.
    /// </summary>
    public void Close()
    {
        Release();
        _handle.Dispose();
    }

    /// <summary>The connection's options, SSL_OP_* (for tests and diagnostics).</summary>
    internal ulong Options => OpenSslNative.SslGetOptions(_ssl);

    /// <summary>The sizes of the read and write BIOs' buffers (for tests and diagnostics).</summary>
    internal (long Read, long Write) BufferCapacities => (Capacity(_readBio), Capacity(_writeBio));

    /// <summary>A connection of the proxy's own: freed when the handle is disposed and no longer referenced.</summary>
    private sealed class ConnectionHandle : SafeHandle
    {
        public ConnectionHandle()
            : base(0, ownsHandle: true)
        {
        }

        public override bool IsInvalid => handle == 0;

        public void Own(nint ssl) => SetHandle(ssl);

        protected override bool ReleaseHandle()
        {
            OpenSslNative.SslFree(handle); // and its BIOs
            return true;
        }
    }

    /// <summary>Bytes in SslStream's receive buffer, or null if its internals are not the ones expected.</summary>
    internal static int? BufferedBytes(SslStream stream)
    {
        if (s_buffer is null || s_arrayBuffer is null || s_activeStart is null || s_availableStart is null)
        {
            return null;
        }

        var arrayBuffer = s_arrayBuffer.GetValue(s_buffer.GetValue(stream));
        return arrayBuffer is not null && s_activeStart.GetValue(arrayBuffer) is int active && s_availableStart.GetValue(arrayBuffer) is int available
            ? available - active
            : null;
    }

    /// <summary>The allocated size of a memory BIO's buffer.</summary>
    private static long Capacity(nint bio)
    {
        nint memory = 0;
        OpenSslNative.BioCtrl(bio, OpenSslNative.BioGetBufMemPtr, 0, &memory);

        // BUF_MEM: size_t length; char *data; size_t max; unsigned long flags.
        return memory == 0 ? 0 : (long)((nuint*)memory)[2];
    }

    /// <summary>False if the buffer stays larger than <see cref="KeepUpTo"/>.</summary>
    private static bool TrimBio(nint bio)
    {
        if (Capacity(bio) <= KeepUpTo)
        {
            return true;
        }

        if (OpenSslNative.BioCtrl(bio, OpenSslNative.BioCtrlPending, 0, null) != 0)
        {
            return false;
        }

        var fresh = OpenSslNative.BufMemNew();
        if (fresh == 0)
        {
            return true; // out of memory: keep the old one, and do not insist
        }

        OpenSslNative.BioCtrl(bio, OpenSslNative.BioSetBufMem, OpenSslNative.BioClose, (void*)fresh); // frees the old one
        return true;
    }
}
