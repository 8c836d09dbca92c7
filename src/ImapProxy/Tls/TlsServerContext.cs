using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace ImapProxy.Tls;

/// <summary>
/// The proxy's own OpenSSL server context (<c>SSL_CTX</c>): the certificate chain and key from the PEM files, TLS 1.2
/// and 1.3, record buffers released while idle. Client connections are made from it by
/// <see cref="TlsRecordLayer.Accept"/> and driven by <see cref="TlsServerStream"/> without <see cref="System.Net.Security.SslStream"/>:
/// the runtime's handshake machinery cost about 100 µs of managed code per TLS login on top of OpenSSL's work
/// (round 14's profile: 16.7% of a TLS login's CPU in managed code and the runtime, against HAProxy's 7.9% in its own).
/// </summary>
/// <remarks>
/// Resumption: OpenSSL's stateless session tickets (TLS 1.3 and 1.2), sealed with the <see cref="SessionTicketKeys"/>
/// it is given (rotated keys of the process's own, or an operator's file shared by the replicas), which every context
/// of the provider shares: a certificate reload does not cost clients a full handshake. Without them (OpenSSL 1.1.1),
/// a ticket key of the context's own that lives as long as the context. No server-side session cache: a ticket costs
/// the server no memory. Each connection holds a reference on its context, which therefore lives as long as its last
/// connection; so do the keys the context holds.
/// </remarks>
internal sealed unsafe class TlsServerContext : SafeHandle
{
    private const int IvLength = 16; // EVP_MAX_IV_LENGTH, AES-CBC's


    /// <summary>An invalid handle; <see cref="Create"/> makes real ones.</summary>
    public TlsServerContext()
        : base(0, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == 0;

    /// <summary>
    /// A context serving the certificate chain of <paramref name="certificateFile"/> (the server's certificate first)
    /// with the key of <paramref name="keyFile"/>, sealing session tickets with <paramref name="ticketKeys"/> (when
    /// null, with OpenSSL's own key of the context). Throws <see cref="CryptographicException"/> with OpenSSL's reason
    /// when the files do not make one, <see cref="PlatformNotSupportedException"/> when OpenSSL cannot be reached or
    /// cannot take <paramref name="ticketKeys"/>.
    /// </summary>
    public static TlsServerContext Create(string certificateFile, string keyFile, bool releaseBuffers, SessionTicketKeys? ticketKeys = null)
    {
        if (ticketKeys is not null && OpenSslNative.TicketKeysUnavailableReason is { } ticketReason)
        {
            throw new PlatformNotSupportedException("Session ticket keys of the proxy's own cannot be used: " + ticketReason);
        }

        if (OpenSslNative.ContextUnavailableReason is { } reason)
        {
            throw new PlatformNotSupportedException("OpenSSL cannot be used directly: " + reason);
        }

        var context = new TlsServerContext();
        OpenSslNative.ErrClearError();
        var ctx = OpenSslNative.SslCtxNewServer();
        if (ctx == 0)
        {
            throw new CryptographicException(OpenSslNative.TakeErrorText("SSL_CTX_new failed"));
        }

        context.SetHandle(ctx);
        try
        {
            OpenSslNative.SslCtxCtrl(ctx, OpenSslNative.SslCtrlSetMinProtoVersion, OpenSslNative.Tls12Version);

            // Renegotiation would let a TLS 1.2 client make the server do a handshake's work again in the middle of
            // a session; compression is off in OpenSSL 3 anyway (CRIME).
            OpenSslNative.SslCtxSetOptions(ctx, OpenSslNative.SslOpNoRenegotiation | OpenSslNative.SslOpNoCompression);
            OpenSslNative.SslCtxCtrl(ctx, OpenSslNative.SslCtrlSetSessionCacheMode, OpenSslNative.SslSessionCacheOff);
            if (releaseBuffers)
            {
                OpenSslNative.SslCtxCtrl(ctx, OpenSslNative.SslCtrlMode, OpenSslNative.SslModeReleaseBuffers);
            }

            if (!OpenSslNative.SslCtxUseCertificateChainFile(ctx, certificateFile))
            {
                throw new CryptographicException($"{certificateFile}: {OpenSslNative.TakeErrorText("no certificate")}");
            }

            if (!OpenSslNative.SslCtxUsePrivateKeyFile(ctx, keyFile) || !OpenSslNative.SslCtxCheckPrivateKey(ctx))
            {
                throw new CryptographicException($"{keyFile}: {OpenSslNative.TakeErrorText("not the certificate's key")}");
            }

            if (ticketKeys is not null)
            {
                TicketSealing.Attach(ctx, ticketKeys);
            }

            return context;
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    protected override bool ReleaseHandle()
    {
        OpenSslNative.SslCtxFree(handle); // connections still open keep their own reference
        return true;
    }

    /// <summary>
    /// The ticket key callback: OpenSSL calls it in the handshake (on the thread driving it) to seal a new ticket
    /// and to open one a client offers. The keys hang off the SSL_CTX (a handle in its data slot, let go of when
    /// OpenSSL frees the context after its last connection), so a connection always finds its own context's.
    /// </summary>
    private static class TicketSealing
    {
        private static readonly Lock s_slotLock = new();
        private static int s_slot = -1;

        public static void Attach(nint ctx, SessionTicketKeys keys)
        {
            var slot = Slot();
            var handle = GCHandle.Alloc(keys);
            if (!OpenSslNative.SslCtxSetData(ctx, slot, GCHandle.ToIntPtr(handle)))
            {
                handle.Free();
                throw new CryptographicException(OpenSslNative.TakeErrorText("the session ticket keys were refused"));
            }

            // From here FreeKeys lets go of the handle, when the context goes.
            if (!OpenSslNative.SslCtxSetTicketKeyCallback(ctx, &SealOrOpen))
            {
                throw new CryptographicException(OpenSslNative.TakeErrorText("the session ticket callback was refused"));
            }
        }

        /// <summary>The data slot, registered once (and only here: the caller checked that OpenSSL has the functions).</summary>
        private static int Slot()
        {
            lock (s_slotLock)
            {
                if (s_slot < 0)
                {
                    s_slot = OpenSslNative.SslCtxNewDataIndex(&FreeKeys);
                }

                return s_slot >= 0 ? s_slot : throw new CryptographicException(OpenSslNative.TakeErrorText("no data slot for the session ticket keys"));
            }
        }

        /// <summary>
        /// CRYPTO_EX_free: called for every SSL_CTX the process frees (the runtime's own too, whose slot is empty).
        /// </summary>
        [UnmanagedCallersOnly]
        private static void FreeKeys(nint parent, nint data, nint exData, int index, nint argl, nint argp)
        {
            if (data != 0)
            {
                GCHandle.FromIntPtr(data).Free();
            }
        }

        /// <summary>
        /// SSL_CTX_set_tlsext_ticket_key_evp_cb's callback. Sealing (<paramref name="seal"/> 1): names the key, makes
        /// the IV, sets up the cipher and the MAC; 1. Opening: 1, or 2 when the client should get a new ticket (always
        /// in TLS 1.3: with 1 OpenSSL sends none, and a client that used its ticket then comes back with a full
        /// handshake). Anything else, a key not known included, is 0: OpenSSL then seals no ticket (TLS 1.3) or an
        /// empty one (1.2), or ignores the client's and makes a full handshake; a negative answer would fail the
        /// connection. What a failure left on the thread's OpenSSL error queue is taken off again, for the same reason.
        /// The context is the connection's own (<c>SSL_get_SSL_CTX</c>; OpenSSL asks the session context's callback,
        /// the same one as long as nothing switches contexts by server name). No exception may leave it.
        /// </summary>
        [UnmanagedCallersOnly]
        private static int SealOrOpen(nint ssl, byte* keyName, byte* iv, nint cipherContext, nint macContext, int seal)
        {
            OpenSslNative.ErrSetMark();
            var answer = 0;
            try
            {
                var data = OpenSslNative.SslCtxGetData(OpenSslNative.SslGetContext(ssl), s_slot);
                if (data != 0 && GCHandle.FromIntPtr(data).Target is SessionTicketKeys keys)
                {
                    answer = seal == 1 ? Seal(keys, keyName, iv, cipherContext, macContext) : Open(keys, ssl, keyName, iv, cipherContext, macContext);
                }
            }
#pragma warning disable CA1031 // An exception cannot cross into OpenSSL; 0 costs this client a ticket or a resumption.
            catch (Exception)
#pragma warning restore CA1031
            {
                answer = 0;
            }

            if (answer == 0)
            {
                OpenSslNative.ErrPopToMark();
            }

            return answer;
        }

        private static int Seal(SessionTicketKeys keys, byte* keyName, byte* iv, nint cipherContext, nint macContext)
        {
            var key = keys.ForSealing();
            key.Name.CopyTo(new Span<byte>(keyName, SessionTicketKey.NameLength));
            RandomNumberGenerator.Fill(new Span<byte>(iv, IvLength));
            return OpenSslNative.InitTicketContexts(cipherContext, macContext, key, iv, seal: true) ? 1 : 0;
        }

        private static int Open(SessionTicketKeys keys, nint ssl, byte* keyName, byte* iv, nint cipherContext, nint macContext)
        {
            var key = keys.ForOpening(new ReadOnlySpan<byte>(keyName, SessionTicketKey.NameLength), out var renew);
            if (key is null || !OpenSslNative.InitTicketContexts(cipherContext, macContext, key, iv, seal: false))
            {
                return 0;
            }

            // TLS 1.3 clients use a ticket once (RFC 8446, C.4): a resumed session always gets a new one, as with
            // OpenSSL's own key. TLS 1.2 tickets are kept until their key is no longer the sealing one.
            return renew || OpenSslNative.SslVersion(ssl) == OpenSslNative.Tls13Version ? 2 : 1;
        }
    }
}
