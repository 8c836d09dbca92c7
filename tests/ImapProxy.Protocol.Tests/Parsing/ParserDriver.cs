using System.Buffers;
using System.Text;
using ImapProxy.Protocol.Parsing;
using ImapProxy.Protocol.Tests.TestSupport;

namespace ImapProxy.Protocol.Tests.Parsing;

/// <summary>What a parser produced for one delivery of an input, rendered so that runs compare as text.</summary>
internal sealed record ParseRun(IReadOnlyList<string> Events, byte[] Unconsumed, bool AtCommandStart, long HighWaterMark);

/// <summary>One call into the parser: returns the rendered outcome, or null when it needs more data.</summary>
internal delegate string? ParserStep(ImapCommandParser parser, ref SequenceReader<byte> reader);

/// <summary>Feeds input to an <see cref="ImapCommandParser"/> read by read, the way a session over a pipe does.</summary>
internal static class ParserDriver
{
    /// <summary>Small limits so that every limit is cheap to reach.</summary>
    public static ImapParserLimits SmallLimits { get; } = new(MaxLineLength: 64, MaxLiteralSize: 16, MaxCommandSize: 256);

    /// <summary>The usual step: <see cref="ImapCommandParser.TryParse"/>.</summary>
    public static string? ParseCommand(ImapCommandParser parser, ref SequenceReader<byte> reader)
    {
        var before = reader.Consumed;
        var status = parser.TryParse(ref reader, out var command, out var error);
        if (status == ParseStatus.NeedMoreData)
        {
            Assert.Null(command);
            return null;
        }

        if (status == ParseStatus.Command)
        {
            Assert.True(reader.Consumed > before, "A command was returned without consuming its bytes.");
        }

        return Render(status, command, error);
    }

    public static ParseRun Run(ImapParserLimits limits, Delivery delivery) => Run(limits, delivery, ParseCommand);

    public static ParseRun Run(ImapParserLimits limits, Delivery delivery, ParserStep step)
    {
        var parser = new ImapCommandParser(limits);
        var pipe = new SimulatedPipe();
        var events = new List<string>();
        foreach (var read in delivery.Reads)
        {
            foreach (var segment in read)
            {
                pipe.Write(segment);
            }

            var reader = new SequenceReader<byte>(pipe.Read());
            for (var guard = 0; ; guard++)
            {
                Assert.True(guard < 10_000, "The parser keeps returning without consuming.");
                var outcome = step(parser, ref reader);
                if (outcome is null)
                {
                    break;
                }

                events.Add(outcome);
            }

            pipe.AdvanceTo(reader.Consumed);
        }

        return new ParseRun(events, pipe.Unconsumed(), parser.IsAtCommandStart, pipe.HighWaterMark);
    }

    public static ParseRun Run(ImapParserLimits limits, string input) => Run(limits, Splits.Whole(Splits.Bytes(input)));

    /// <summary>
    /// Runs every delivery of <paramref name="input"/> and checks that each gives exactly what the whole input
    /// in one read gives. Returns that run.
    /// </summary>
    public static ParseRun RunAllSplits(ImapParserLimits limits, string input) =>
        RunAllSplits(limits, input, () => ParseCommand);

    /// <summary>As above, with a fresh step (it may hold state) for each run.</summary>
    public static ParseRun RunAllSplits(ImapParserLimits limits, string input, Func<ParserStep> newStep)
    {
        var bytes = Splits.Bytes(input);
        var whole = Run(limits, Splits.Whole(bytes), newStep());
        foreach (var delivery in Splits.All(bytes).Skip(1))
        {
            var run = Run(limits, delivery, newStep());
            Assert.True(
                whole.Events.SequenceEqual(run.Events),
                $"{delivery}: expected [{string.Join(" | ", whole.Events)}] but got [{string.Join(" | ", run.Events)}]");
            Assert.True(
                whole.Unconsumed.AsSpan().SequenceEqual(run.Unconsumed),
                $"{delivery}: unconsumed \"{Splits.Escape(run.Unconsumed)}\", whole input left \"{Splits.Escape(whole.Unconsumed)}\"");
            Assert.True(whole.AtCommandStart == run.AtCommandStart, $"{delivery}: IsAtCommandStart differs.");
        }

        return whole;
    }

    public static string Render(ParseStatus status, ImapCommand? command, ParseError error) => status switch
    {
        ParseStatus.Command => "CMD " + Render(command!),
        ParseStatus.ContinuationRequired => "+",
        ParseStatus.Error => $"ERR {error.Kind} tag={(error.Tag is null ? "<none>" : Splits.Escape(error.Tag))}{(error.Fatal ? " fatal" : string.Empty)}",
        _ => status.ToString(),
    };

    /// <summary>"tag Name arg arg": atoms bare, strings in quotes (escaped), NIL, lists in parentheses.</summary>
    public static string Render(ImapCommand command)
    {
        var builder = new StringBuilder();
        builder.Append(Splits.Escape(command.Tag)).Append(' ').Append(command.Name);
        foreach (var argument in command.Arguments)
        {
            builder.Append(' ');
            Render(builder, argument);
        }

        return builder.ToString();
    }

    private static void Render(StringBuilder builder, ImapArgument argument)
    {
        switch (argument.Kind)
        {
            case ImapArgumentKind.Atom:
                builder.Append(Splits.Escape(argument.Value));
                break;
            case ImapArgumentKind.Text:
                builder.Append('"').Append(Splits.Escape(argument.Value)).Append('"');
                break;
            case ImapArgumentKind.Nil:
                builder.Append("NIL");
                break;
            default:
                builder.Append('(');
                for (var i = 0; i < argument.Items.Count; i++)
                {
                    if (i > 0)
                    {
                        builder.Append(' ');
                    }

                    Render(builder, argument.Items[i]);
                }

                builder.Append(')');
                break;
        }
    }
}
