using System.Buffers;
using ImapProxy.Protocol.Parsing;
using ImapProxy.Protocol.PreAuth;
using ImapProxy.Protocol.Tests.TestSupport;

namespace ImapProxy.Protocol.Tests.PreAuth;

public sealed class ClientIdentityTests
{
    [Fact]
    public void Nil_Empty()
    {
        Assert.True(ClientIdentity.TryCreate(Arguments("NIL"), out var identity));

        Assert.Empty(identity.Fields);
    }

    [Fact]
    public void EmptyList_Empty()
    {
        Assert.True(ClientIdentity.TryCreate(Arguments("()"), out var identity));

        Assert.Empty(identity.Fields);
    }

    [Fact]
    public void Pairs_KeptInOrder()
    {
        Assert.True(ClientIdentity.TryCreate(Arguments("(\"name\" \"Mail\" \"os\" NIL \"name\" {2+}\r\nx\u00E9)"), out var identity));

        Assert.Equal(
            ["name=Mail", "os=<nil>", "name=x\\xE9"],
            identity.Fields.Select(f => $"{Splits.Escape(f.Key)}={(f.Value is null ? "<nil>" : Splits.Escape(f.Value))}"));
    }

    [Fact]
    public void Limits_30Pairs_30OctetFields_1024OctetValues()
    {
        var pairs = string.Join(' ', Enumerable.Range(0, ClientIdentity.MaxPairs).Select(i => $"\"k{i}\" \"v\""));
        Assert.True(ClientIdentity.TryCreate(Arguments($"({pairs})"), out _));
        Assert.False(ClientIdentity.TryCreate(Arguments($"({pairs} \"one\" \"more\")"), out _));

        Assert.True(ClientIdentity.TryCreate(Arguments($"(\"{new string('k', 30)}\" \"v\")"), out _));
        Assert.False(ClientIdentity.TryCreate(Arguments($"(\"{new string('k', 31)}\" \"v\")"), out _));

        Assert.True(ClientIdentity.TryCreate(Arguments($"(\"k\" \"{new string('v', 1024)}\")"), out _));
        Assert.False(ClientIdentity.TryCreate(Arguments($"(\"k\" \"{new string('v', 1025)}\")"), out _));
    }

    [Theory]
    [InlineData("")]
    [InlineData("NIL NIL")]
    [InlineData("\"name\"")]
    [InlineData("name")]
    [InlineData("(\"name\")")]
    [InlineData("(name \"x\")")]
    [InlineData("(\"name\" x)")]
    [InlineData("(NIL \"x\")")]
    [InlineData("(\"\" \"x\")")]
    [InlineData("(\"name\" (\"x\"))")]
    [InlineData("((\"name\" \"x\"))")]
    [InlineData("(\"name\" \"x\") NIL")]
    public void Invalid(string arguments)
    {
        Assert.False(ClientIdentity.TryCreate(Arguments(arguments), out var identity));

        Assert.Same(ClientIdentity.Empty, identity);
    }

    private static IReadOnlyList<ImapArgument> Arguments(string arguments)
    {
        var parser = new ImapCommandParser(new ImapParserLimits());
        var text = arguments.Length == 0 ? "a ID\r\n" : $"a ID {arguments}\r\n";
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(Splits.Bytes(text)));
        Assert.Equal(ParseStatus.Command, parser.TryParse(ref reader, out var command, out _));
        return command!.Arguments;
    }
}
