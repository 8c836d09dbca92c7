namespace ImapProxy.Protocol.Parsing;

/// <summary>A complete pre-authentication command: tag, name and its arguments (literals already received).</summary>
public sealed class ImapCommand
{
    public ImapCommand(byte[] tag, ImapCommandName name, IReadOnlyList<ImapArgument> arguments)
    {
        Tag = tag;
        Name = name;
        Arguments = arguments;
    }

    public byte[] Tag { get; }

    public ImapCommandName Name { get; }

    public IReadOnlyList<ImapArgument> Arguments { get; }

    /// <summary>Overwrites every argument value (LOGIN carries a password).</summary>
    public void ClearArguments()
    {
        foreach (var argument in Arguments)
        {
            argument.Clear();
        }
    }
}
