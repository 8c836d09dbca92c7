namespace ImapProxy.Testing.Dovecot;

/// <summary>How to configure a throwaway <see cref="DovecotInstance"/>.</summary>
public sealed class DovecotOptions
{
    /// <summary>The users every instance gets unless <see cref="Users"/> is set.</summary>
    public static IReadOnlyList<DovecotUser> DefaultUsers { get; } =
    [
        new("alice", "alice-pass"),
        new("bob", "bob-pass"),
        new("carol", "carol-pass"),
        new("dave", "dave-pass"),
    ];

    /// <summary>The address Dovecot listens on: any 127.x address.</summary>
    public string ListenAddress { get; init; } = "127.0.0.1";

    /// <summary>The passwd-file users.</summary>
    public IReadOnlyList<DovecotUser> Users { get; init; } = DefaultUsers;

    /// <summary>
    /// <c>login_trusted_networks = 127.0.0.0/8</c>: Dovecot then accepts the proxy's forwarded ID fields
    /// (<c>x-originating-ip</c>, <c>x-session-id</c>, ...) and logs the real client address.
    /// </summary>
    public bool LoginTrustedLoopback { get; init; } = true;

    /// <summary>With <see cref="KeyPemPath"/>: <c>ssl = yes</c>, STARTTLS on the plain port and an imaps port.</summary>
    public string? CertificatePemPath { get; init; }

    /// <summary>The PEM private key for <see cref="CertificatePemPath"/>.</summary>
    public string? KeyPemPath { get; init; }

    /// <summary>Small messages ("Seed message N for USER") put in each user's INBOX before the first start.</summary>
    public int SeedMessagesPerUser { get; init; } = 3;

    /// <summary>
    /// Dovecot's per-client-address auth penalty (failed logins delay the next ones from that address by
    /// 2, 4, 8, then 15 s). Off by default; note that <c>login_trusted_networks</c> does not exempt a
    /// client from it in Dovecot 2.3, and that it counts per forwarded <c>x-originating-ip</c>.
    /// </summary>
    public bool AuthPenalty { get; init; }

    /// <summary>Appended verbatim to dovecot.conf (later settings override earlier ones).</summary>
    public string? ExtraConfig { get; init; }

    /// <summary>How long start-up may take before it fails with the log attached.</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(30);
}
