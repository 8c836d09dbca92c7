namespace ImapProxy.Testing.Dovecot;

/// <summary>
/// A mail user of a test <see cref="DovecotInstance"/>, stored in a passwd-file with the PLAIN scheme.
/// </summary>
/// <param name="Name">
/// Login name: letters, digits and <c>. - _ @</c> only (Dovecot's default <c>auth_username_chars</c>).
/// </param>
/// <param name="Password">
/// Any text without ':', CR, LF or NUL (the passwd-file field separators); stored as UTF-8, so spaces,
/// quotes, backslashes and non-ASCII characters all work.
/// </param>
public sealed record DovecotUser(string Name, string Password);
