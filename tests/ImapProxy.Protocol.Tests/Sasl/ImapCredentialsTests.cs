using ImapProxy.Protocol.Sasl;

namespace ImapProxy.Protocol.Tests.Sasl;

public sealed class ImapCredentialsTests
{
    [Theory]
    [InlineData("user", "pass", "", true)]
    [InlineData("user", "", "", true)]
    [InlineData("", "pass", "", false)]
    [InlineData("u\0ser", "pass", "", false)]
    [InlineData("user", "pa\0ss", "", false)]
    [InlineData("user", "pass", "ad\0min", false)]
    [InlineData("user", "pass", "admin", true)]
    public void IsWellFormed(string user, string password, string authzid, bool expected)
    {
        using var credentials = new ImapCredentials(LoginMechanism.LoginCommand, Bytes(user), Bytes(password), Bytes(authzid));

        Assert.Equal(expected, credentials.IsWellFormed);
    }

    [Theory]
    [InlineData(255, 255, 255, true)]
    [InlineData(256, 1, 0, false)]
    [InlineData(1, 256, 0, false)]
    [InlineData(1, 1, 256, false)]
    public void IsWellFormed_FieldsUpTo255Octets(int user, int password, int authzid, bool expected)
    {
        using var credentials = new ImapCredentials(LoginMechanism.Plain, Filled(user, 'u'), Filled(password, 'p'), Filled(authzid, 'z'));

        Assert.Equal(expected, credentials.IsWellFormed);
    }

    [Fact]
    public void EffectiveUser_AuthorizationIdentityWhenGiven()
    {
        using var plain = new ImapCredentials(LoginMechanism.Plain, Bytes("user"), Bytes("pass"));
        using var proxied = new ImapCredentials(LoginMechanism.Plain, Bytes("master"), Bytes("pass"), Bytes("user"));

        Assert.Empty(plain.AuthorizationId);
        Assert.Equal(Bytes("user"), plain.EffectiveUser.ToArray());
        Assert.Equal(Bytes("user"), proxied.EffectiveUser.ToArray());
    }

    [Fact]
    public void Dispose_ZeroesEveryField()
    {
        var credentials = new ImapCredentials(LoginMechanism.SaslLogin, Bytes("user"), Bytes("secret"), Bytes("admin"));

        credentials.Dispose();

        Assert.All(credentials.AuthenticationId, b => Assert.Equal(0, b));
        Assert.All(credentials.Password, b => Assert.Equal(0, b));
        Assert.All(credentials.AuthorizationId, b => Assert.Equal(0, b));
    }

    [Fact]
    public void ToString_NamesTheMechanismOnly()
    {
        using var credentials = new ImapCredentials(LoginMechanism.Plain, Bytes("user"), Bytes("secret"));

        Assert.Equal("Plain", credentials.ToString());
    }

    private static byte[] Bytes(string text) => System.Text.Encoding.Latin1.GetBytes(text);

    private static byte[] Filled(int length, char value) => Enumerable.Repeat((byte)value, length).ToArray();
}
