using System.Security.Cryptography;

namespace ImapProxy.Protocol.Sasl;

public enum LoginMechanism
{
    /// <summary>The LOGIN command.</summary>
    LoginCommand,
    Plain,
    /// <summary>AUTHENTICATE LOGIN (the draft "LOGIN" SASL mechanism).</summary>
    SaslLogin,
}

/// <summary>
/// Credentials received from a client. The bytes are overwritten on dispose; nothing here is ever formatted
/// into a log message (ToString is the mechanism only).
/// </summary>
public sealed class ImapCredentials : IDisposable
{
    /// <summary>PLAIN allows up to 255 octets per field (RFC 4616 §2); the same bound applies to LOGIN.</summary>
    public const int MaxFieldLength = 255;

    public ImapCredentials(LoginMechanism mechanism, byte[] authenticationId, byte[] password, byte[]? authorizationId = null)
    {
        Mechanism = mechanism;
        AuthenticationId = authenticationId;
        Password = password;
        AuthorizationId = authorizationId ?? [];
    }

    public LoginMechanism Mechanism { get; }

    /// <summary>The identity whose password this is (authcid).</summary>
    public byte[] AuthenticationId { get; }

    public byte[] Password { get; }

    /// <summary>The identity to act as (authzid), empty when it is the authentication identity.</summary>
    public byte[] AuthorizationId { get; }

    /// <summary>The mailbox owner: the authorization identity if given, else the authentication identity.</summary>
    public ReadOnlySpan<byte> EffectiveUser => AuthorizationId.Length > 0 ? AuthorizationId : AuthenticationId;

    /// <summary>
    /// Field sizes within bounds, a non-empty user, and no NUL anywhere: NUL cannot travel in a LOGIN literal
    /// nor inside a PLAIN field.
    /// </summary>
    public bool IsWellFormed =>
        AuthenticationId.Length is > 0 and <= MaxFieldLength &&
        Password.Length <= MaxFieldLength &&
        AuthorizationId.Length <= MaxFieldLength &&
        !AuthenticationId.AsSpan().Contains((byte)0) &&
        !Password.AsSpan().Contains((byte)0) &&
        !AuthorizationId.AsSpan().Contains((byte)0);

    public void Dispose()
    {
        CryptographicOperations.ZeroMemory(Password);
        CryptographicOperations.ZeroMemory(AuthenticationId);
        CryptographicOperations.ZeroMemory(AuthorizationId);
    }

    public override string ToString() => Mechanism.ToString();
}
