using System.Text;
using ImapProxy.Protocol.Sasl;
using ImapProxy.Protocol.Tests.TestSupport;

namespace ImapProxy.Protocol.Tests.Sasl;

public sealed class SaslCodecTests
{
    [Theory]
    [InlineData("AHVzZXIAcGFzcw==", "\0user\0pass")]
    [InlineData("QQ==", "A")]
    [InlineData("QUI=", "AB")]
    [InlineData("QUJD", "ABC")]
    [InlineData("++//", "\u00FB\u00EF\u00FF")]
    [InlineData("=", "")]
    public void TryDecodeBase64_Valid(string base64, string expected)
    {
        Assert.Equal(SaslDecodeResult.Ok, SaslCodec.TryDecodeBase64(Splits.Bytes(base64), out var decoded));
        Assert.Equal(Splits.Bytes(expected), decoded);
    }

    [Fact]
    public void TryDecodeBase64_EmptyLine_IsTheEmptyResponse()
    {
        Assert.Equal(SaslDecodeResult.Ok, SaslCodec.TryDecodeBase64([], out var decoded));
        Assert.Empty(decoded);
    }

    [Theory]
    [InlineData("Q")]
    [InlineData("QQ")]
    [InlineData("QQ=")]
    [InlineData("QUJ")]
    [InlineData("==")]
    [InlineData("====")]
    [InlineData("Q===")]
    [InlineData("QQ==QQ==")]
    [InlineData("Q=Q=")]
    [InlineData("QR==")]
    [InlineData("QUJ=")]
    [InlineData("QUJD ")]
    [InlineData(" QUJD")]
    [InlineData("QU JD")]
    [InlineData("QUJD    ")]
    [InlineData("QUJD\tQUJD\t\t\t")]
    [InlineData("QUJD\r\nQUJD")]
    [InlineData("QU-_")]
    [InlineData("QUJ!")]
    [InlineData("QUJ\u00C4")]
    [InlineData("QUJ\0")]
    [InlineData("*")]
    public void TryDecodeBase64_Invalid(string base64)
    {
        Assert.Equal(SaslDecodeResult.InvalidBase64, SaslCodec.TryDecodeBase64(Splits.Bytes(base64), out var decoded));
        Assert.Empty(decoded);
    }

    [Fact]
    public void TryParsePlain_SplitsTheThreeFields()
    {
        Assert.Equal(SaslDecodeResult.Ok, SaslCodec.TryParsePlain("admin\0user\0pa ss"u8, out var credentials));

        Assert.NotNull(credentials);
        Assert.Equal(LoginMechanism.Plain, credentials.Mechanism);
        Assert.Equal("admin"u8.ToArray(), credentials.AuthorizationId);
        Assert.Equal("user"u8.ToArray(), credentials.AuthenticationId);
        Assert.Equal("pa ss"u8.ToArray(), credentials.Password);
        Assert.Equal("admin"u8.ToArray(), credentials.EffectiveUser.ToArray());
    }

    [Fact]
    public void TryParsePlain_NoAuthorizationIdentity_TheUserActsAsItself()
    {
        Assert.Equal(SaslDecodeResult.Ok, SaslCodec.TryParsePlain("\0user\0"u8, out var credentials));

        Assert.Empty(credentials!.AuthorizationId);
        Assert.Empty(credentials.Password);
        Assert.Equal("user"u8.ToArray(), credentials.EffectiveUser.ToArray());
    }

    [Fact]
    public void TryParsePlain_EightBitBytes_Kept()
    {
        var message = new byte[] { 0, 0xC3, 0xA9, 0, 0xFF, 0x80, (byte)'"', (byte)'\\', (byte)'\r', (byte)'\n' };

        Assert.Equal(SaslDecodeResult.Ok, SaslCodec.TryParsePlain(message, out var credentials));

        Assert.Equal(new byte[] { 0xC3, 0xA9 }, credentials!.AuthenticationId);
        Assert.Equal(new byte[] { 0xFF, 0x80, (byte)'"', (byte)'\\', (byte)'\r', (byte)'\n' }, credentials.Password);
    }

    [Theory]
    [InlineData("")]
    [InlineData("user")]
    [InlineData("\0user")]
    [InlineData("user\0pass")]
    [InlineData("\0\0pass")]
    [InlineData("\0user\0pa\0ss")]
    [InlineData("a\0user\0pass\0")]
    [InlineData("\0\0")]
    public void TryParsePlain_Malformed(string message)
    {
        Assert.Equal(SaslDecodeResult.Malformed, SaslCodec.TryParsePlain(Splits.Bytes(message), out var credentials));
        Assert.Null(credentials);
    }

    [Theory]
    [InlineData(255, 255, 255, SaslDecodeResult.Ok)]
    [InlineData(0, 1, 0, SaslDecodeResult.Ok)]
    [InlineData(256, 4, 4, SaslDecodeResult.Malformed)]
    [InlineData(0, 256, 4, SaslDecodeResult.Malformed)]
    [InlineData(0, 4, 256, SaslDecodeResult.Malformed)]
    public void TryParsePlain_FieldsUpTo255Octets(int authzid, int authcid, int password, SaslDecodeResult expected)
    {
        var message = $"{new string('z', authzid)}\0{new string('u', authcid)}\0{new string('p', password)}";

        Assert.Equal(expected, SaslCodec.TryParsePlain(Splits.Bytes(message), out var credentials));

        Assert.Equal(expected == SaslDecodeResult.Ok, credentials is not null);
    }

    [Theory]
    [InlineData("", "user", "pass")]
    [InlineData("admin", "user", "p a\"s\\s")]
    [InlineData("", "u", "")]
    [InlineData("\u00E9", "\u00FF\u0080", "\r\n")]
    public void EncodePlain_RoundTrips(string authzid, string authcid, string password)
    {
        var encoded = SaslCodec.EncodePlain(Splits.Bytes(authzid), Splits.Bytes(authcid), Splits.Bytes(password));

        Assert.Equal(Convert.ToBase64String(Splits.Bytes($"{authzid}\0{authcid}\0{password}")), Encoding.ASCII.GetString(encoded));
        Assert.Equal(SaslDecodeResult.Ok, SaslCodec.TryDecodeBase64(encoded, out var decoded));
        Assert.Equal(SaslDecodeResult.Ok, SaslCodec.TryParsePlain(decoded, out var credentials));
        Assert.Equal(Splits.Bytes(authzid), credentials!.AuthorizationId);
        Assert.Equal(Splits.Bytes(authcid), credentials.AuthenticationId);
        Assert.Equal(Splits.Bytes(password), credentials.Password);
    }

    [Fact]
    public void EncodePlain_LongestFields()
    {
        var field = new byte[255];
        field.AsSpan().Fill((byte)'x');

        var encoded = SaslCodec.EncodePlain(field, field, field);

        Assert.Equal(Convert.ToBase64String([.. field, 0, .. field, 0, .. field]), Encoding.ASCII.GetString(encoded));
    }
}
