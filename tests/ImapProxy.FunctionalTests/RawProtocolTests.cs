using System.Net;
using System.Text;
using ImapProxy.Testing.Raw;

namespace ImapProxy.FunctionalTests;

/// <summary>Byte-exact checks over raw sockets, against the proxy and against Dovecot directly.</summary>
[Collection(ClusterDefinition.Name)]
public class RawProtocolTests(ClusterFixture cluster)
{
    private Task<RawImapClient> ConnectImapsAsync(IPAddress? local = null) =>
        RawImapClient.ConnectAsync(cluster.Proxy.Imaps, local, implicitTls: true, serverCertificate: cluster.ServerCertificate);

    private static string CapabilityCode(string taggedOk)
    {
        var start = taggedOk.IndexOf("[CAPABILITY ", StringComparison.Ordinal);
        Assert.True(start >= 0, $"no capability code in: {taggedOk}");
        var end = taggedOk.IndexOf(']', start);
        return taggedOk[(start + 12)..end];
    }

    [Fact]
    public async Task PostLoginCapabilities_AreExactlyDovecots()
    {
        var backend = cluster.BackendFor("erin");
        string directOk;
        List<string> directCapability;
        await using (var direct = await RawImapClient.ConnectAsync(new IPEndPoint(IPAddress.Parse(backend.Address), backend.Port)))
        {
            await direct.ReadLineAsync();
            directOk = (await direct.CommandAsync("a", "LOGIN erin erin-pass"))[^1];
            directCapability = await direct.CommandAsync("b", "CAPABILITY");
        }

        await using var proxied = await ConnectImapsAsync();
        var greeting = await proxied.ReadLineAsync();
        Assert.StartsWith("* OK [CAPABILITY IMAP4rev1 ", greeting, StringComparison.Ordinal);
        var proxiedOk = (await proxied.CommandAsync("a", "LOGIN erin erin-pass"))[^1];
        var proxiedCapability = await proxied.CommandAsync("b", "CAPABILITY");

        Assert.StartsWith("a OK [CAPABILITY ", proxiedOk, StringComparison.Ordinal);
        Assert.EndsWith("] Logged in", proxiedOk, StringComparison.Ordinal);
        Assert.Equal(CapabilityCode(directOk), CapabilityCode(proxiedOk));
        Assert.Equal(directCapability[0], proxiedCapability[0]);
        Assert.StartsWith("* CAPABILITY IMAP4rev1 ", proxiedCapability[0], StringComparison.Ordinal);
    }

    [Fact]
    public async Task Password_WithSpacesQuotesBackslashAndNonAscii_WorksAsQuotedAndAsLiteral()
    {
        var password = Encoding.UTF8.GetBytes(ClusterFixture.TrickyPassword);
        await using (var client = await ConnectImapsAsync())
        {
            await client.ReadLineAsync();
            // A literal carries the raw UTF-8 bytes.
            await client.SendAsync($"a LOGIN tricky {{{password.Length}}}\r\n");
            Assert.StartsWith("+ ", await client.ReadLineAsync(), StringComparison.Ordinal);
            await client.SendAsync([.. password, .. "\r\n"u8]);
            Assert.StartsWith("a OK [CAPABILITY ", (await client.ReadUntilTaggedAsync("a"))[^1], StringComparison.Ordinal);
        }

        await using (var client = await ConnectImapsAsync())
        {
            await client.ReadLineAsync();
            // A quoted string with escapes (8-bit bytes inside quotes, as many clients send them).
            var escaped = ClusterFixture.TrickyPassword.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal);
            await client.SendAsync([.. "a LOGIN \"tricky\" \""u8, .. Encoding.UTF8.GetBytes(escaped), .. "\"\r\n"u8]);
            Assert.StartsWith("a OK [CAPABILITY ", (await client.ReadUntilTaggedAsync("a"))[^1], StringComparison.Ordinal);
        }

        Assert.DoesNotContain(ClusterFixture.TrickyPassword, cluster.Proxy.Logs.AllText, StringComparison.Ordinal);
    }

    [Fact]
    public async Task CommandsPipelinedWithLogin_AreAllAnsweredInOrder()
    {
        await using var client = await ConnectImapsAsync();
        await client.ReadLineAsync();
        await client.SendAsync("a LOGIN frank frank-pass\r\nb SELECT INBOX\r\nc FETCH 1 (FLAGS)\r\nd NOOP\r\ne LOGOUT\r\n");
        var tagged = await client.ReadTaggedAsync(5);

        Assert.Equal(["a", "b", "c", "d", "e"], tagged.Select(l => l.Split(' ')[0]));
        Assert.All(tagged, l => Assert.Equal("OK", l.Split(' ')[1]));
        Assert.True(await client.WaitForCloseAsync());
    }

    [Fact]
    public async Task AClientThatEndsItsSideAfterLogout_StillGetsDovecotsAnswer_ThenTheClose_AsDirectly()
    {
        // A script whose input ends with LOGOUT (ncat, nc -N): the answer comes before the close, directly...
        var backend = cluster.BackendFor("frank");
        await using (var direct = await RawImapClient.ConnectAsync(new IPEndPoint(IPAddress.Parse(backend.Address), backend.Port)))
        {
            await LogoutAndEndSendingAsync(direct);
        }

        // ... and through the proxy (TLS: the client's close_notify, then the end of its TCP sending side).
        await using var client = await ConnectImapsAsync();
        await LogoutAndEndSendingAsync(client);

        static async Task LogoutAndEndSendingAsync(RawImapClient client)
        {
            await client.ReadLineAsync();
            Assert.StartsWith("a OK", (await client.CommandAsync("a", "LOGIN frank frank-pass"))[^1], StringComparison.Ordinal);
            Assert.StartsWith("b OK", (await client.CommandAsync("b", "SELECT INBOX"))[^1], StringComparison.Ordinal);

            await client.SendAsync("c LOGOUT\r\n");
            await client.EndSendingAsync();
            var answer = await client.ReadUntilTaggedAsync("c");

            Assert.StartsWith("* BYE ", answer[0], StringComparison.Ordinal);
            Assert.StartsWith("c OK ", answer[^1], StringComparison.Ordinal);
            Assert.True(await client.WaitForCloseAsync());
        }
    }

    [Fact]
    public async Task CommandsPipelinedWithLogin_ThenTheEndOfSending_AreAllAnswered()
    {
        // The whole script in one go, then the end of the client's input (printf ... | ncat --ssl).
        await using var client = await ConnectImapsAsync();
        await client.ReadLineAsync();
        await client.SendAsync("a LOGIN frank frank-pass\r\nb SELECT INBOX\r\nc FETCH 1 (FLAGS)\r\nd LOGOUT\r\n");
        await client.EndSendingAsync();
        var tagged = await client.ReadTaggedAsync(4);

        Assert.Equal(["a", "b", "c", "d"], tagged.Select(l => l.Split(' ')[0]));
        Assert.All(tagged, l => Assert.Equal("OK", l.Split(' ')[1]));
        Assert.True(await client.WaitForCloseAsync());
    }

    [Fact]
    public async Task BytesPipelinedBehindStartTls_AreNeverExecuted()
    {
        // 127.0.0.9 is trusted: had the pipelined plaintext LOGIN run, it would have succeeded.
        var mailbox = "pwned-starttls-" + Guid.NewGuid().ToString("N")[..8];
        await using (var client = await RawImapClient.ConnectAsync(cluster.Proxy.Imap, ClusterFixture.TrustedClient, serverCertificate: cluster.ServerCertificate))
        {
            Assert.Contains(" AUTH=PLAIN", await client.ReadLineAsync(), StringComparison.Ordinal);
            await client.SendAsync($"a STARTTLS\r\nb LOGIN alice alice-pass\r\nc CREATE {mailbox}\r\n");
            Assert.Equal("a OK Begin TLS negotiation now.", await client.ReadLineAsync());
            await client.UpgradeToTlsAsync();
            var noop = await client.CommandAsync("d", "NOOP");
            Assert.Equal(["d OK NOOP completed."], noop);
            var capability = await client.CommandAsync("e", "CAPABILITY");
            Assert.DoesNotContain("STARTTLS", capability[0], StringComparison.Ordinal);
            await client.CommandAsync("f", "LOGOUT");
        }

        await AssertMailboxAbsentAsync("alice", "alice-pass", mailbox);
    }

    [Fact]
    public async Task ImplicitTlsPort_BytesThatAreNoClientHello_AreNeverAnsweredInPlaintext()
    {
        var skip = cluster.Proxy.Logs.Count;
        await using var client = await RawImapClient.ConnectAsync(cluster.Proxy.Imaps);
        await client.SendAsync("a LOGIN alice alice-pass\r\n\r\n");

        // No greeting, no BYE (at most a TLS alert record): the handshake fails, the session ends with its reason.
        var answer = await client.ReadLineAsync(TimeSpan.FromSeconds(20));
        Assert.True(answer is null || answer.EndsWith("<EOF>", StringComparison.Ordinal), $"a line in plaintext: {answer}");
        Assert.DoesNotContain("OK", answer ?? "", StringComparison.Ordinal);
        Assert.DoesNotContain("BYE", answer ?? "", StringComparison.Ordinal);
        var who = $":{client.LocalEndPoint.Port} backend="; // this connection's session-end line
        await cluster.Proxy.Logs.WaitForAsync(l => l.Contains(who, StringComparison.Ordinal) && l.Contains("reason=tls handshake failed", StringComparison.Ordinal), TimeSpan.FromSeconds(10), skip);
    }

    [Fact]
    public async Task PlaintextLogin_WithoutTls_IsRefusedUnlessTrusted()
    {
        await using (var client = await RawImapClient.ConnectAsync(cluster.Proxy.Plain))
        {
            var greeting = await client.ReadLineAsync();
            Assert.Contains(" LOGINDISABLED", greeting, StringComparison.Ordinal);
            Assert.DoesNotContain("AUTH=", greeting, StringComparison.Ordinal);
            Assert.DoesNotContain("STARTTLS", greeting, StringComparison.Ordinal);
            Assert.StartsWith("a NO [PRIVACYREQUIRED]", (await client.CommandAsync("a", "LOGIN alice alice-pass"))[^1], StringComparison.Ordinal);
            Assert.StartsWith("b NO [PRIVACYREQUIRED]", (await client.CommandAsync("b", "AUTHENTICATE PLAIN AGFsaWNlAGFsaWNlLXBhc3M="))[^1], StringComparison.Ordinal);
        }

        await using (var trusted = await RawImapClient.ConnectAsync(cluster.Proxy.Plain, ClusterFixture.TrustedClient))
        {
            var greeting = await trusted.ReadLineAsync();
            Assert.Contains(" AUTH=PLAIN AUTH=LOGIN", greeting, StringComparison.Ordinal);
            Assert.StartsWith("a OK [CAPABILITY ", (await trusted.CommandAsync("a", "LOGIN alice alice-pass"))[^1], StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task WrongPassword_GetsTheProxysOwnText_AndTheDialogueContinues()
    {
        await using var client = await ConnectImapsAsync(IPAddress.Parse("127.0.0.22"));
        await client.ReadLineAsync();
        Assert.Equal(["a NO [AUTHENTICATIONFAILED] Authentication failed."], await client.CommandAsync("a", "LOGIN alice not-her-password"));
        Assert.Equal(["b NO [AUTHENTICATIONFAILED] Authentication failed."], await client.CommandAsync("b", "LOGIN nosuchuser whatever"));
        Assert.Equal(["c BAD Command requires authentication."], await client.CommandAsync("c", "SELECT INBOX"));
        Assert.Equal(["d BAD Command requires authentication."], await client.CommandAsync("d", "ENABLE CONDSTORE"));
        Assert.StartsWith("e OK [CAPABILITY ", (await client.CommandAsync("e", "LOGIN alice alice-pass"))[^1], StringComparison.Ordinal);
    }

    [Fact]
    public async Task OverlongLine_IsBadTooBig_ThenTooManyErrorsIsBye()
    {
        await using var client = await ConnectImapsAsync();
        await client.ReadLineAsync();
        await client.SendAsync("a NOOP " + new string('x', 40_000) + "\r\n");
        Assert.Equal("a BAD [TOOBIG] Line too long.", await client.ReadLineAsync());
        Assert.Equal(["b OK NOOP completed."], await client.CommandAsync("b", "NOOP"));
        // Commands that merely need authentication do not count; malformed ones do (budget 10, one spent above).
        Assert.Equal(["c BAD Command requires authentication."], await client.CommandAsync("c", "SELECT INBOX"));
        for (var i = 0; i < 9; i++)
        {
            await client.SendAsync($"x{i} LOGIN\r\n");
            Assert.Equal($"x{i} BAD [CLIENTBUG] LOGIN expects a user name and a password.", await client.ReadLineAsync());
        }

        await client.SendAsync("y LOGIN\r\n");
        Assert.Equal("y BAD [CLIENTBUG] LOGIN expects a user name and a password.", await client.ReadLineAsync());
        Assert.Equal("* BYE Too many invalid commands.", await client.ReadLineAsync());
        Assert.True(await client.WaitForCloseAsync());
    }

    internal async Task AssertMailboxAbsentAsync(string user, string password, string mailbox)
    {
        var backend = cluster.BackendFor(user);
        await using var direct = await RawImapClient.ConnectAsync(new IPEndPoint(IPAddress.Parse(backend.Address), backend.Port));
        await direct.ReadLineAsync();
        Assert.StartsWith("a OK", (await direct.CommandAsync("a", $"LOGIN {user} {password}"))[^1], StringComparison.Ordinal);
        var list = await direct.CommandAsync("b", $"LIST \"\" \"{mailbox}*\"");
        Assert.Equal(["b OK List completed"], list.Select(l => l.Split(" (")[0]).Where(l => !l.StartsWith('*')).Select(l => l.TrimEnd('.')));
        Assert.DoesNotContain(list, l => l.StartsWith("* LIST", StringComparison.Ordinal));
    }
}
