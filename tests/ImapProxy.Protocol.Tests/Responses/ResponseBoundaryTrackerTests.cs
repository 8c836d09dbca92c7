using System.Text;
using ImapProxy.Protocol.Responses;

namespace ImapProxy.Protocol.Tests.Responses;

public class ResponseBoundaryTrackerTests
{
    public static TheoryData<string, bool, bool> Streams() => new()
    {
        { "", true, false },
        { "* 3 EXISTS\r\n", true, false },
        { "* 3 EXISTS\r\n* 1 RECENT", false, false },
        { "+ idling\r\n", true, false },
        // Inside a literal, and right after it: the FETCH response is not over.
        { "* 1 FETCH (BODY[] {10}\r\n0123456", false, false },
        { "* 1 FETCH (BODY[] {10}\r\n0123456789", false, false },
        { "* 1 FETCH (BODY[] {10}\r\n01234\r\n789)\r\n", true, false },
        // A literal's bytes that look like a line end, or like BYE, are just bytes.
        { "* 1 FETCH (BODY[] {12}\r\n* BYE x\r\n\r\n)\r\n", true, false },
        { "* 1 FETCH (BODY[] {5+}\r\nab\r\nc)\r\n", true, false },
        { "* 1 FETCH (BODY[] {0}\r\n)\r\n", true, false },
        { "* BYE Logging out\r\na OK Logout completed.\r\n", true, true },
        { "a OK done\r\n* BYE Server shutting down.\r\n", true, true },
        { "a OK not a * BYE here\r\n", true, false },
    };

    [Theory]
    [MemberData(nameof(Streams))]
    public void Advance_AnySplit_GivesTheSameAnswer(string stream, bool atLineStart, bool sawBye)
    {
        var bytes = Encoding.ASCII.GetBytes(stream);
        for (var split = 0; split <= bytes.Length; split++)
        {
            var tracker = new ResponseBoundaryTracker();
            tracker.Advance(bytes.AsSpan(0, split));
            tracker.Advance(bytes.AsSpan(split));
            Assert.Equal(atLineStart, tracker.AtLineStart);
            Assert.Equal(sawBye, tracker.SawBye);
        }

        var byteByByte = new ResponseBoundaryTracker();
        foreach (var b in bytes)
        {
            byteByByte.Advance([b]);
        }

        Assert.Equal(atLineStart, byteByByte.AtLineStart);
        Assert.Equal(sawBye, byteByByte.SawBye);
    }
}
