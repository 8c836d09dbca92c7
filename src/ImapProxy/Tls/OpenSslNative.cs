using System.Net.Security;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace ImapProxy.Tls;

/// <summary>
/// The OpenSSL functions the proxy calls, from the libssl and libcrypto the runtime loaded: on its own server contexts
/// and connections (<see cref="TlsServerContext"/>, <see cref="TlsRecordLayer"/>), and on the runtime's, with the way
/// to a <see cref="SslStream"/>'s <c>SSL*</c>.
/// </summary>
/// <remarks>
/// .NET has no public way to reach the <c>SSL*</c>. The handle is read from the stream's private
/// <c>_securityContext</c> and only used when its type is exactly the runtime's <c>SafeSslHandle</c>. The libraries
/// are the ones already mapped in the process, named after <see cref="SafeEvpPKeyHandle.OpenSslVersion"/>. The
/// native side is looked up the first time a live handle is seen, when the runtime has certainly loaded them. If
/// anything does not match (another platform, a runtime whose internals changed), <see cref="UnavailableReason"/>
/// says why and callers keep the runtime's own behaviour.
/// </remarks>
internal static unsafe class OpenSslNative
{
    public const int SslErrorNone = 0;
    public const int SslErrorSsl = 1;
    public const int SslErrorWantRead = 2;
    public const int SslErrorWantWrite = 3;
    public const int SslErrorSyscall = 5;
    public const int SslErrorZeroReturn = 6;

    public const int BioTypeMem = 0x0401;      // BIO_TYPE_MEM
    public const int BioCtrlPending = 10;      // BIO_CTRL_PENDING
    public const int BioSetBufMem = 114;       // BIO_C_SET_BUF_MEM (BIO_set_mem_buf)
    public const int BioGetBufMemPtr = 115;    // BIO_C_GET_BUF_MEM_PTR (BIO_get_mem_ptr)
    public const int BioClose = 1;             // BIO_CLOSE: the BIO frees the BUF_MEM it is given
    public const ulong SslOpNoRenegotiation = 0x40000000; // SSL_OP_NO_RENEGOTIATION (1.1.1 and 3.x)
    public const ulong SslOpNoCompression = 0x00020000;   // SSL_OP_NO_COMPRESSION
    public const int SslCtrlMode = 33;                     // SSL_CTRL_MODE: SSL_(CTX_)set_mode
    public const int SslCtrlSetSessionCacheMode = 44;      // SSL_CTRL_SET_SESS_CACHE_MODE
    public const int SslCtrlSetMinProtoVersion = 123;      // SSL_CTRL_SET_MIN_PROTO_VERSION
    public const long SslModeReleaseBuffers = 0x10;        // SSL_MODE_RELEASE_BUFFERS
    public const long SslSessionCacheOff = 0;              // SSL_SESS_CACHE_OFF
    public const long Tls12Version = 0x0303;               // TLS1_2_VERSION
    public const int Tls13Version = 0x0304;                // TLS1_3_VERSION
    public const int SslFiletypePem = 1;                   // SSL_FILETYPE_PEM

    private const int CryptoExIndexSslCtx = 1;             // CRYPTO_EX_INDEX_SSL_CTX
    private const uint OsslParamUtf8String = 4;            // OSSL_PARAM_UTF8_STRING
    private const uint OsslParamOctetString = 5;           // OSSL_PARAM_OCTET_STRING

    private const string SafeSslHandleType = "Microsoft.Win32.SafeHandles.SafeSslHandle";

    private static readonly FieldInfo? s_securityContext = OperatingSystem.IsLinux()
        ? typeof(SslStream).GetField("_securityContext", BindingFlags.Instance | BindingFlags.NonPublic)
        : null;

    /// <summary>
    /// Why OpenSSL cannot be reached in this process, or null when it can. Meaningful once a TLS handshake has
    /// happened (the native part is only looked up then).
    /// </summary>
    public static string? UnavailableReason => !OperatingSystem.IsLinux()
        ? "not Linux"
        : s_securityContext is null || !typeof(SafeHandle).IsAssignableFrom(s_securityContext.FieldType)
            ? "SslStream has no _securityContext handle in this runtime"
            : Functions.UnavailableReason;

    /// <summary>Why the proxy cannot make OpenSSL connections of its own in this process, or null when it can.</summary>
    public static string? ContextUnavailableReason => OperatingSystem.IsLinux() ? Functions.UnavailableReason : "not Linux";

    /// <summary>The stream's <c>SSL*</c> handle (not referenced: the caller adds a reference while it uses it), or null.</summary>
    public static SafeHandle? GetSslHandle(SslStream stream) =>
        OperatingSystem.IsLinux() && s_securityContext?.GetValue(stream) is SafeHandle handle
            && handle.GetType().FullName == SafeSslHandleType && Functions.UnavailableReason is null
            ? handle
            : null;

    public static long SslCtrl(nint ssl, int command, long argument) => (long)Functions.SslCtrl(ssl, command, (nint)argument, 0);

    /// <summary>Adds <paramref name="options"/> (SSL_OP_*) to a connection's (C unsigned long in 1.1.1, uint64_t in 3.x).</summary>
    public static void SslSetOptions(nint ssl, ulong options) => _ = Functions.SslSetOptions(ssl, options);

    /// <summary>A connection's options (SSL_OP_*).</summary>
    public static ulong SslGetOptions(nint ssl) => Functions.SslGetOptions(ssl);

    public static int SslRead(nint ssl, byte* buffer, int count) => Functions.SslRead(ssl, buffer, count);

    public static int SslWrite(nint ssl, byte* buffer, int count) => Functions.SslWrite(ssl, buffer, count);

    public static int SslGetError(nint ssl, int result) => Functions.SslGetError(ssl, result);

    public static nint SslGetReadBio(nint ssl) => Functions.SslGetRbio(ssl);

    public static nint SslGetWriteBio(nint ssl) => Functions.SslGetWbio(ssl);

    public static int BioWrite(nint bio, byte* data, int count) => Functions.BioWrite(bio, data, count);

    public static int BioRead(nint bio, byte* data, int count) => Functions.BioRead(bio, data, count);

    public static long BioCtrl(nint bio, int command, long argument, void* pointer) => (long)Functions.BioCtrl(bio, command, (nint)argument, pointer);

    public static int BioMethodType(nint bio) => Functions.BioMethodType(bio);

    public static nint BufMemNew() => Functions.BufMemNew();

    public static void ErrClearError() => Functions.ErrClearError();

    /// <summary>
    /// The oldest error on this thread's OpenSSL error queue as OpenSSL's text (codes and reason, no data of the
    /// connection's), or <paramref name="fallback"/> when the queue is empty; the queue is cleared.
    /// </summary>
    public static string TakeErrorText(string fallback)
    {
        var code = Functions.ErrGetError();
        Functions.ErrClearError();
        if (code == 0)
        {
            return fallback;
        }

        var text = stackalloc byte[256];
        Functions.ErrErrorStringN(code, text, 256);
        return Marshal.PtrToStringUTF8((nint)text) ?? fallback;
    }

    /// <summary>A new server context (SSL_CTX) of the TLS method, or 0.</summary>
    public static nint SslCtxNewServer() => Functions.SslCtxNew(Functions.TlsServerMethod());

    public static void SslCtxFree(nint context) => Functions.SslCtxFree(context);

    public static long SslCtxCtrl(nint context, int command, long argument) => (long)Functions.SslCtxCtrl(context, command, (nint)argument, 0);

    public static void SslCtxSetOptions(nint context, ulong options) => _ = Functions.SslCtxSetOptions(context, options);

    /// <summary>Loads the certificate and the chain behind it from a PEM file; false on failure (see the error queue).</summary>
    public static bool SslCtxUseCertificateChainFile(nint context, string path)
    {
        fixed (byte* file = NullTerminated(path))
        {
            return Functions.SslCtxUseCertificateChainFile(context, file) == 1;
        }
    }

    /// <summary>Loads the private key from a PEM file; false on failure (see the error queue).</summary>
    public static bool SslCtxUsePrivateKeyFile(nint context, string path)
    {
        fixed (byte* file = NullTerminated(path))
        {
            return Functions.SslCtxUsePrivateKeyFile(context, file, SslFiletypePem) == 1;
        }
    }

    public static bool SslCtxCheckPrivateKey(nint context) => Functions.SslCtxCheckPrivateKey(context) == 1;

    /// <summary>A new connection of <paramref name="context"/> (which it references), or 0.</summary>
    public static nint SslNew(nint context) => Functions.SslNew(context);

    /// <summary>Frees a connection and the BIOs it was given.</summary>
    public static void SslFree(nint ssl) => Functions.SslFree(ssl);

    /// <summary>A new memory BIO (empty reads return -1 and ask for a retry), or 0.</summary>
    public static nint BioNewMemory() => Functions.BioNew(Functions.BioSMem());

    public static void BioFree(nint bio) => _ = Functions.BioFree(bio);

    /// <summary>Gives the connection its read and write BIOs, which it owns from then on (it frees them).</summary>
    public static void SslSetBio(nint ssl, nint readBio, nint writeBio) => Functions.SslSetBio(ssl, readBio, writeBio);

    public static void SslSetAcceptState(nint ssl) => Functions.SslSetAcceptState(ssl);

    public static int SslDoHandshake(nint ssl) => Functions.SslDoHandshake(ssl);

    public static bool SslSessionReused(nint ssl) => Functions.SslSessionReused(ssl) == 1;

    /// <summary>Plaintext bytes decrypted and not read yet.</summary>
    public static int SslPending(nint ssl) => Functions.SslPending(ssl);

    /// <summary>The negotiated protocol's number (0x0304 for TLS 1.3).</summary>
    public static int SslVersion(nint ssl) => Functions.SslVersion(ssl);

    /// <summary>The negotiated protocol's name ("TLSv1.3").</summary>
    public static string SslGetVersion(nint ssl) => Marshal.PtrToStringUTF8(Functions.SslGetVersion(ssl)) ?? "unknown";

    /// <summary>
    /// Why session tickets cannot be sealed with keys of the proxy's own (<see cref="SessionTicketKeys"/>) in this
    /// process, or null when they can: the callback that takes them is OpenSSL 3's.
    /// </summary>
    public static string? TicketKeysUnavailableReason => ContextUnavailableReason ?? TicketFunctions.UnavailableReason;

    /// <summary>Gives <paramref name="context"/> the callback that seals and opens its session tickets; false on failure.</summary>
    public static bool SslCtxSetTicketKeyCallback(nint context, delegate* unmanaged<nint, byte*, byte*, nint, nint, int, int> callback) =>
        TicketFunctions.SslCtxSetTicketKeyEvpCallback(context, callback) == 1;

    /// <summary>
    /// A slot of every SSL_CTX for a pointer of the proxy's, with <paramref name="free"/> called when a context that
    /// holds one is freed (after its last connection); -1 on failure.
    /// </summary>
    public static int SslCtxNewDataIndex(delegate* unmanaged<nint, nint, nint, int, nint, nint, void> free) =>
        TicketFunctions.UnavailableReason is null ? TicketFunctions.CryptoGetExNewIndex(CryptoExIndexSslCtx, 0, 0, null, null, free) : -1;

    /// <summary>Marks the thread's OpenSSL error queue; <see cref="ErrPopToMark"/> takes off what came after.</summary>
    public static void ErrSetMark() => _ = TicketFunctions.ErrSetMark();

    public static void ErrPopToMark() => _ = TicketFunctions.ErrPopToMark();

    public static bool SslCtxSetData(nint context, int index, nint data) => TicketFunctions.SslCtxSetExData(context, index, data) == 1;

    public static nint SslCtxGetData(nint context, int index) => TicketFunctions.SslCtxGetExData(context, index);

    /// <summary>The context a connection was made from.</summary>
    public static nint SslGetContext(nint ssl) => TicketFunctions.SslGetSslCtx(ssl);

    /// <summary>
    /// Sets up a ticket's cipher (AES-256-CBC) and MAC (HMAC-SHA256) contexts with <paramref name="key"/> and
    /// <paramref name="iv"/>, to seal (<paramref name="seal"/>) or to open; false on failure.
    /// </summary>
    public static bool InitTicketContexts(nint cipherContext, nint macContext, SessionTicketKey key, byte* iv, bool seal)
    {
        var cipher = TicketFunctions.Aes256Cbc;
        fixed (byte* aes = key.AesKey)
        fixed (byte* hmac = key.HmacKey)
        fixed (byte* keyName = "key\0"u8)
        fixed (byte* digestName = "digest\0"u8)
        fixed (byte* sha256 = "SHA256\0"u8)
        {
            var ok = seal
                ? TicketFunctions.EvpEncryptInitEx(cipherContext, cipher, 0, aes, iv)
                : TicketFunctions.EvpDecryptInitEx(cipherContext, cipher, 0, aes, iv);
            if (ok != 1)
            {
                return false;
            }

            var parameters = stackalloc OsslParam[3];
            parameters[0] = new OsslParam { Key = keyName, DataType = OsslParamOctetString, Data = hmac, DataSize = (nuint)key.HmacKey.Length, ReturnSize = nuint.MaxValue };
            parameters[1] = new OsslParam { Key = digestName, DataType = OsslParamUtf8String, Data = sha256, DataSize = 6, ReturnSize = nuint.MaxValue };
            parameters[2] = default;
            return TicketFunctions.EvpMacCtxSetParams(macContext, parameters) == 1;
        }
    }

    private static byte[] NullTerminated(string text)
    {
        var bytes = new byte[System.Text.Encoding.UTF8.GetByteCount(text) + 1];
        System.Text.Encoding.UTF8.GetBytes(text, bytes);
        return bytes;
    }

    private static string? LibraryName(string stem, long version) => (version >> 28) switch
    {
        >= 3 => $"{stem}.so.{version >> 28}",
        1 when ((version >> 20) & 0xff) == 1 => $"{stem}.so.1.1",
        _ => null,
    };

    private static bool IsMapped(string soname)
    {
        foreach (var line in File.ReadLines("/proc/self/maps"))
        {
            if (line.EndsWith("/" + soname, StringComparison.Ordinal) || line.Contains("/" + soname + ".", StringComparison.Ordinal))
            {
                return true;
            }
        }

        return false;
    }

    private static nint Load(string? soname, long version)
    {
        if (soname is null)
        {
            throw new InvalidOperationException($"unknown OpenSSL version 0x{version:x}");
        }

        if (!IsMapped(soname))
        {
            throw new InvalidOperationException($"{soname} is not the OpenSSL the runtime loaded");
        }

        return NativeLibrary.Load(soname);
    }

    private static nint Export(nint library, string name) =>
        NativeLibrary.TryGetExport(library, name, out var export) ? export : throw new InvalidOperationException($"{name} not found");

    /// <summary>OSSL_PARAM: one named parameter of an OpenSSL 3 algorithm.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct OsslParam
    {
        public byte* Key;
        public uint DataType;
        public void* Data;
        public nuint DataSize;
        public nuint ReturnSize;
    }

    /// <summary>
    /// The exports that seal session tickets with the proxy's keys, resolved once and apart from
    /// <see cref="Functions"/>: OpenSSL 1.1.1 lacks some of them, and the rest works without.
    /// </summary>
    private static class TicketFunctions
    {
        static TicketFunctions()
        {
            try
            {
                if (!OperatingSystem.IsLinux() || Functions.UnavailableReason is not null)
                {
                    throw new PlatformNotSupportedException(Functions.UnavailableReason ?? "not Linux");
                }

                var version = SafeEvpPKeyHandle.OpenSslVersion;
                if (version >> 28 < 3)
                {
                    throw new PlatformNotSupportedException($"OpenSSL 0x{version:x} is older than 3.0");
                }

                var ssl = Load(LibraryName("libssl", version), version);
                var crypto = Load(LibraryName("libcrypto", version), version);
                SslCtxSetTicketKeyEvpCallback = (delegate* unmanaged<nint, delegate* unmanaged<nint, byte*, byte*, nint, nint, int, int>, int>)Export(ssl, "SSL_CTX_set_tlsext_ticket_key_evp_cb");
                SslGetSslCtx = (delegate* unmanaged<nint, nint>)Export(ssl, "SSL_get_SSL_CTX");
                SslCtxSetExData = (delegate* unmanaged<nint, int, nint, int>)Export(ssl, "SSL_CTX_set_ex_data");
                SslCtxGetExData = (delegate* unmanaged<nint, int, nint>)Export(ssl, "SSL_CTX_get_ex_data");
                CryptoGetExNewIndex = (delegate* unmanaged<int, nint, nint, void*, void*, delegate* unmanaged<nint, nint, nint, int, nint, nint, void>, int>)Export(crypto, "CRYPTO_get_ex_new_index");
                EvpEncryptInitEx = (delegate* unmanaged<nint, nint, nint, byte*, byte*, int>)Export(crypto, "EVP_EncryptInit_ex");
                EvpDecryptInitEx = (delegate* unmanaged<nint, nint, nint, byte*, byte*, int>)Export(crypto, "EVP_DecryptInit_ex");
                EvpMacCtxSetParams = (delegate* unmanaged<nint, OsslParam*, int>)Export(crypto, "EVP_MAC_CTX_set_params");
                ErrSetMark = (delegate* unmanaged<int>)Export(crypto, "ERR_set_mark");
                ErrPopToMark = (delegate* unmanaged<int>)Export(crypto, "ERR_pop_to_mark");

                // Fetched once for the process (never freed): an implicit fetch per ticket would look it up every time.
                var fetch = (delegate* unmanaged<nint, byte*, byte*, nint>)Export(crypto, "EVP_CIPHER_fetch");
                fixed (byte* name = "AES-256-CBC\0"u8)
                {
                    Aes256Cbc = fetch(0, name, null);
                }

                UnavailableReason = Aes256Cbc == 0 ? "AES-256-CBC cannot be fetched" : null;
            }
#pragma warning disable CA1031 // As in Functions: callers keep OpenSSL's own ticket key instead.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                UnavailableReason = ex.Message;
            }
        }

        public static string? UnavailableReason { get; } = "not initialised";

        public static delegate* unmanaged<nint, delegate* unmanaged<nint, byte*, byte*, nint, nint, int, int>, int> SslCtxSetTicketKeyEvpCallback { get; }

        public static delegate* unmanaged<nint, nint> SslGetSslCtx { get; }

        public static delegate* unmanaged<nint, int, nint, int> SslCtxSetExData { get; }

        public static delegate* unmanaged<nint, int, nint> SslCtxGetExData { get; }

        public static delegate* unmanaged<int, nint, nint, void*, void*, delegate* unmanaged<nint, nint, nint, int, nint, nint, void>, int> CryptoGetExNewIndex { get; }

        public static delegate* unmanaged<nint, nint, nint, byte*, byte*, int> EvpEncryptInitEx { get; }

        public static delegate* unmanaged<nint, nint, nint, byte*, byte*, int> EvpDecryptInitEx { get; }

        public static delegate* unmanaged<nint, OsslParam*, int> EvpMacCtxSetParams { get; }

        public static delegate* unmanaged<int> ErrSetMark { get; }

        public static delegate* unmanaged<int> ErrPopToMark { get; }

        public static nint Aes256Cbc { get; }
    }

    /// <summary>The exports, resolved once (C <c>long</c> is pointer-sized on Linux).</summary>
    private static class Functions
    {
        static Functions()
        {
            try
            {
                if (!OperatingSystem.IsLinux())
                {
                    throw new PlatformNotSupportedException("not Linux");
                }

                var version = SafeEvpPKeyHandle.OpenSslVersion;
                var ssl = Load(LibraryName("libssl", version), version);
                var crypto = Load(LibraryName("libcrypto", version), version);
                SslCtrl = (delegate* unmanaged<nint, int, nint, nint, nint>)Export(ssl, "SSL_ctrl");
                SslSetOptions = (delegate* unmanaged<nint, ulong, ulong>)Export(ssl, "SSL_set_options");
                SslGetOptions = (delegate* unmanaged<nint, ulong>)Export(ssl, "SSL_get_options");
                SslRead = (delegate* unmanaged<nint, byte*, int, int>)Export(ssl, "SSL_read");
                SslWrite = (delegate* unmanaged<nint, byte*, int, int>)Export(ssl, "SSL_write");
                SslGetError = (delegate* unmanaged<nint, int, int>)Export(ssl, "SSL_get_error");
                SslGetRbio = (delegate* unmanaged<nint, nint>)Export(ssl, "SSL_get_rbio");
                SslGetWbio = (delegate* unmanaged<nint, nint>)Export(ssl, "SSL_get_wbio");
                BioWrite = (delegate* unmanaged<nint, byte*, int, int>)Export(crypto, "BIO_write");
                BioRead = (delegate* unmanaged<nint, byte*, int, int>)Export(crypto, "BIO_read");
                BioCtrl = (delegate* unmanaged<nint, int, nint, void*, nint>)Export(crypto, "BIO_ctrl");
                BioMethodType = (delegate* unmanaged<nint, int>)Export(crypto, "BIO_method_type");
                BufMemNew = (delegate* unmanaged<nint>)Export(crypto, "BUF_MEM_new");
                ErrClearError = (delegate* unmanaged<void>)Export(crypto, "ERR_clear_error");
                ErrGetError = (delegate* unmanaged<nuint>)Export(crypto, "ERR_get_error");
                ErrErrorStringN = (delegate* unmanaged<nuint, byte*, nuint, void>)Export(crypto, "ERR_error_string_n");
                BioNew = (delegate* unmanaged<nint, nint>)Export(crypto, "BIO_new");
                BioSMem = (delegate* unmanaged<nint>)Export(crypto, "BIO_s_mem");
                BioFree = (delegate* unmanaged<nint, int>)Export(crypto, "BIO_free");
                TlsServerMethod = (delegate* unmanaged<nint>)Export(ssl, "TLS_server_method");
                SslCtxNew = (delegate* unmanaged<nint, nint>)Export(ssl, "SSL_CTX_new");
                SslCtxFree = (delegate* unmanaged<nint, void>)Export(ssl, "SSL_CTX_free");
                SslCtxCtrl = (delegate* unmanaged<nint, int, nint, nint, nint>)Export(ssl, "SSL_CTX_ctrl");
                SslCtxSetOptions = (delegate* unmanaged<nint, ulong, ulong>)Export(ssl, "SSL_CTX_set_options");
                SslCtxUseCertificateChainFile = (delegate* unmanaged<nint, byte*, int>)Export(ssl, "SSL_CTX_use_certificate_chain_file");
                SslCtxUsePrivateKeyFile = (delegate* unmanaged<nint, byte*, int, int>)Export(ssl, "SSL_CTX_use_PrivateKey_file");
                SslCtxCheckPrivateKey = (delegate* unmanaged<nint, int>)Export(ssl, "SSL_CTX_check_private_key");
                SslNew = (delegate* unmanaged<nint, nint>)Export(ssl, "SSL_new");
                SslFree = (delegate* unmanaged<nint, void>)Export(ssl, "SSL_free");
                SslSetBio = (delegate* unmanaged<nint, nint, nint, void>)Export(ssl, "SSL_set_bio");
                SslSetAcceptState = (delegate* unmanaged<nint, void>)Export(ssl, "SSL_set_accept_state");
                SslDoHandshake = (delegate* unmanaged<nint, int>)Export(ssl, "SSL_do_handshake");
                SslSessionReused = (delegate* unmanaged<nint, int>)Export(ssl, "SSL_session_reused");
                SslPending = (delegate* unmanaged<nint, int>)Export(ssl, "SSL_pending");
                SslGetVersion = (delegate* unmanaged<nint, nint>)Export(ssl, "SSL_get_version");
                SslVersion = (delegate* unmanaged<nint, int>)Export(ssl, "SSL_version");
                UnavailableReason = null;
            }
#pragma warning disable CA1031 // A type initializer that throws would fail every TLS connection; callers fall back instead.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                UnavailableReason = ex.Message;
            }
        }

        public static string? UnavailableReason { get; } = "not initialised";

        public static delegate* unmanaged<nint, int, nint, nint, nint> SslCtrl { get; }

        public static delegate* unmanaged<nint, ulong, ulong> SslSetOptions { get; }

        public static delegate* unmanaged<nint, ulong> SslGetOptions { get; }

        public static delegate* unmanaged<nint, byte*, int, int> SslRead { get; }

        public static delegate* unmanaged<nint, byte*, int, int> SslWrite { get; }

        public static delegate* unmanaged<nint, int, int> SslGetError { get; }

        public static delegate* unmanaged<nint, nint> SslGetRbio { get; }

        public static delegate* unmanaged<nint, nint> SslGetWbio { get; }

        public static delegate* unmanaged<nint, byte*, int, int> BioWrite { get; }

        public static delegate* unmanaged<nint, byte*, int, int> BioRead { get; }

        public static delegate* unmanaged<nint, int, nint, void*, nint> BioCtrl { get; }

        public static delegate* unmanaged<nint, int> BioMethodType { get; }

        public static delegate* unmanaged<nint> BufMemNew { get; }

        public static delegate* unmanaged<void> ErrClearError { get; }

        public static delegate* unmanaged<nuint> ErrGetError { get; }

        public static delegate* unmanaged<nuint, byte*, nuint, void> ErrErrorStringN { get; }

        public static delegate* unmanaged<nint, nint> BioNew { get; }

        public static delegate* unmanaged<nint> BioSMem { get; }

        public static delegate* unmanaged<nint, int> BioFree { get; }

        public static delegate* unmanaged<nint> TlsServerMethod { get; }

        public static delegate* unmanaged<nint, nint> SslCtxNew { get; }

        public static delegate* unmanaged<nint, void> SslCtxFree { get; }

        public static delegate* unmanaged<nint, int, nint, nint, nint> SslCtxCtrl { get; }

        public static delegate* unmanaged<nint, ulong, ulong> SslCtxSetOptions { get; }

        public static delegate* unmanaged<nint, byte*, int> SslCtxUseCertificateChainFile { get; }

        public static delegate* unmanaged<nint, byte*, int, int> SslCtxUsePrivateKeyFile { get; }

        public static delegate* unmanaged<nint, int> SslCtxCheckPrivateKey { get; }

        public static delegate* unmanaged<nint, nint> SslNew { get; }

        public static delegate* unmanaged<nint, void> SslFree { get; }

        public static delegate* unmanaged<nint, nint, nint, void> SslSetBio { get; }

        public static delegate* unmanaged<nint, void> SslSetAcceptState { get; }

        public static delegate* unmanaged<nint, int> SslDoHandshake { get; }

        public static delegate* unmanaged<nint, int> SslSessionReused { get; }

        public static delegate* unmanaged<nint, int> SslPending { get; }

        public static delegate* unmanaged<nint, nint> SslGetVersion { get; }

        public static delegate* unmanaged<nint, int> SslVersion { get; }
    }
}
