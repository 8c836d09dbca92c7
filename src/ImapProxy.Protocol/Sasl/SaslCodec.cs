using System.Buffers;
using System.Buffers.Text;

namespace ImapProxy.Protocol.Sasl;

public enum SaslDecodeResult
{
    Ok,
    /// <summary>Not base64: RFC 3501 §6.2.2 wants a tagged BAD.</summary>
    InvalidBase64,
    /// <summary>Decoded, but not a valid message of the mechanism: an authentication failure.</summary>
    Malformed,
}

/// <summary>Base64 framing of SASL responses and the PLAIN message (RFC 4616).</summary>
public static class SaslCodec
{
    private static readonly SearchValues<byte> s_base64Alphabet =
        SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="u8);

    /// <summary>
    /// Decodes a client response line or initial response. "=" is the empty response (RFC 4959 §3).
    /// Strict: whitespace or bad padding is invalid.
    /// </summary>
    public static SaslDecodeResult TryDecodeBase64(ReadOnlySpan<byte> base64, out byte[] decoded)
    {
        decoded = [];
        // An empty line is the base64 of nothing (RFC 3501 §6.2.2); so is "=" in an initial response.
        if (base64.IsEmpty || (base64.Length == 1 && base64[0] == (byte)'='))
        {
            return SaslDecodeResult.Ok;
        }

        // Base64.DecodeFromUtf8 skips whitespace (since .NET 8), so the alphabet is checked first.
        if (base64.Length % 4 != 0 || base64.ContainsAnyExcept(s_base64Alphabet))
        {
            return SaslDecodeResult.InvalidBase64;
        }

        var buffer = new byte[Base64.GetMaxDecodedFromUtf8Length(base64.Length)];
        if (Base64.DecodeFromUtf8(base64, buffer, out var consumed, out var written) != OperationStatus.Done || consumed != base64.Length)
        {
            Array.Clear(buffer);
            return SaslDecodeResult.InvalidBase64;
        }

        decoded = written == buffer.Length ? buffer : buffer.AsSpan(0, written).ToArray();
        if (!ReferenceEquals(decoded, buffer))
        {
            Array.Clear(buffer);
        }

        return SaslDecodeResult.Ok;
    }

    /// <summary>Splits "authzid NUL authcid NUL passwd" (RFC 4616 §2).</summary>
    public static SaslDecodeResult TryParsePlain(ReadOnlySpan<byte> message, out ImapCredentials? credentials)
    {
        credentials = null;
        var first = message.IndexOf((byte)0);
        if (first < 0)
        {
            return SaslDecodeResult.Malformed;
        }

        var rest = message[(first + 1)..];
        var second = rest.IndexOf((byte)0);
        if (second < 0)
        {
            return SaslDecodeResult.Malformed;
        }

        var authzid = message[..first];
        var authcid = rest[..second];
        var password = rest[(second + 1)..];
        if (authcid.IsEmpty || password.Contains((byte)0))
        {
            return SaslDecodeResult.Malformed;
        }

        credentials = new ImapCredentials(LoginMechanism.Plain, authcid.ToArray(), password.ToArray(), authzid.ToArray());
        return credentials.IsWellFormed ? SaslDecodeResult.Ok : Dispose(credentials, out credentials);
    }

    /// <summary>Base64 of "authzid NUL authcid NUL passwd", as a backend's PLAIN initial response.</summary>
    public static byte[] EncodePlain(ReadOnlySpan<byte> authorizationId, ReadOnlySpan<byte> authenticationId, ReadOnlySpan<byte> password)
    {
        var length = authorizationId.Length + authenticationId.Length + password.Length + 2;
        var message = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            var w = 0;
            authorizationId.CopyTo(message);
            w += authorizationId.Length;
            message[w++] = 0;
            authenticationId.CopyTo(message.AsSpan(w));
            w += authenticationId.Length;
            message[w++] = 0;
            password.CopyTo(message.AsSpan(w));
            var encoded = new byte[Base64.GetMaxEncodedToUtf8Length(length)];
            Base64.EncodeToUtf8(message.AsSpan(0, length), encoded, out _, out var written);
            return written == encoded.Length ? encoded : encoded[..written];
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(message, clearArray: true);
        }
    }

    private static SaslDecodeResult Dispose(ImapCredentials credentials, out ImapCredentials? cleared)
    {
        credentials.Dispose();
        cleared = null;
        return SaslDecodeResult.Malformed;
    }
}
