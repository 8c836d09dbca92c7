using System.Text;
using ImapProxy.Backends;
using Xunit;

namespace ImapProxy.Tests.Backends;

/// <summary>The hand-over's line splitter: lines across receives, literals read past, limits.</summary>
public sealed class BackendLineReaderTests
{
    [Fact]
    public void Lines_ArrivingAByteAtATime_ComeOutWhole_WithoutTheirCrlf()
    {
        using var reader = new BackendLineReader(1024);
        var lines = new List<string>();
        foreach (var b in "* OK ready\r\nP1 OK done\r\nP2"u8.ToArray())
        {
            Receive(reader, [b]);
            while (reader.TryTakeLine(out var line))
            {
                lines.Add(Encoding.ASCII.GetString(line));
            }
        }

        Assert.Equal(["* OK ready", "P1 OK done"], lines);
        Assert.Equal("P2", Encoding.ASCII.GetString(reader.Pending));
    }

    [Fact]
    public void ALiteral_AndTheRestOfItsResponse_AreReadPast_AfterTheLineThatAnnouncedIt()
    {
        using var reader = new BackendLineReader(1024);
        Receive(reader, "* ID (\"name\" {4}\r\nab\r\n \"x\" {3}\r\n"u8);

        Assert.True(reader.TryTakeLine(out var first));
        Assert.Equal("* ID (\"name\" {4}", Encoding.ASCII.GetString(first));
        Assert.False(reader.TryTakeLine(out _)); // the second literal has not arrived

        Receive(reader, "c\r\n)\r\nP1 OK ID completed\r\n* 1 EXISTS\r\n"u8);
        Assert.True(reader.TryTakeLine(out var next));
        Assert.Equal("P1 OK ID completed", Encoding.ASCII.GetString(next));
        Assert.Equal("* 1 EXISTS\r\n", Encoding.ASCII.GetString(reader.Pending));
    }

    [Fact]
    public void ALineLongerThanTheLimit_Fails()
    {
        using var reader = new BackendLineReader(100);
        Receive(reader, new byte[60]);
        Assert.False(reader.TryTakeLine(out _));
        Receive(reader, new byte[60]);
        var failure = Assert.Throws<BackendProtocolException>(() => reader.TryTakeLine(out _));
        Assert.Equal("backend response line too long", failure.Message);
    }

    [Fact]
    public void ALiteralLargerThanTheLimit_Fails()
    {
        using var reader = new BackendLineReader(100);
        Receive(reader, "* ID (\"name\" {101}\r\n"u8);
        var failure = Assert.Throws<BackendProtocolException>(() => reader.TryTakeLine(out _));
        Assert.Equal("backend literal too large", failure.Message);
    }

    [Fact]
    public void ALongLine_GrowsTheBuffer_AndKeepsItsBytes()
    {
        using var reader = new BackendLineReader(64 * 1024);
        var text = "* OK [CAPABILITY " + string.Join(' ', Enumerable.Range(0, 2000).Select(i => "X-CAP" + i)) + "] ready";
        var bytes = Encoding.ASCII.GetBytes(text + "\r\n");
        for (var offset = 0; offset < bytes.Length; offset += 700)
        {
            Receive(reader, bytes.AsSpan(offset, Math.Min(700, bytes.Length - offset)));
        }

        Assert.True(reader.TryTakeLine(out var line));
        Assert.Equal(text, Encoding.ASCII.GetString(line));
        Assert.True(reader.Pending.IsEmpty);
    }

    private static void Receive(BackendLineReader reader, ReadOnlySpan<byte> bytes)
    {
        while (!bytes.IsEmpty)
        {
            var space = reader.GetReceiveSpace().Span;
            var count = Math.Min(space.Length, bytes.Length);
            bytes[..count].CopyTo(space);
            reader.Received(count);
            bytes = bytes[count..];
        }
    }
}
