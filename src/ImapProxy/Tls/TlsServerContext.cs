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
/// Resumption: OpenSSL's stateless session tickets (TLS 1.3 and 1.2), with a ticket key of this context's own, so a
/// client resumes on the context that issued its ticket (a certificate reload makes a new one: clients then make one
/// full handshake). No server-side session cache: a ticket costs the server no memory. Each connection holds a
/// reference on its context, which therefore lives as long as its last connection.
/// </remarks>
internal sealed class TlsServerContext : SafeHandle
{
    /// <summary>An invalid handle; <see cref="Create"/> makes real ones.</summary>
    public TlsServerContext()
        : base(0, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == 0;

    /// <summary>
    /// A context serving the certificate chain of <paramref name="certificateFile"/> (the server's certificate first)
    /// with the key of <paramref name="keyFile"/>. Throws <see cref="CryptographicException"/> with OpenSSL's reason
    /// when the files do not make one, <see cref="PlatformNotSupportedException"/> when OpenSSL cannot be reached.
    /// </summary>
    public static TlsServerContext Create(string certificateFile, string keyFile, bool releaseBuffers)
    {
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
}
