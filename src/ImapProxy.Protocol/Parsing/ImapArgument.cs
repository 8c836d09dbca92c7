namespace ImapProxy.Protocol.Parsing;

public enum ImapArgumentKind
{
    Atom,
    /// <summary>A quoted string or a literal: the client chose the form, the value is the same.</summary>
    Text,
    Nil,
    List,
}

/// <summary>
/// One parsed argument of a pre-authentication command. Values are small (bounded by the line and literal
/// limits) and owned: they are copied out of the pipe so the parser can advance past them.
/// </summary>
public sealed class ImapArgument
{
    private static readonly List<ImapArgument> s_noItems = [];

    private ImapArgument(ImapArgumentKind kind, byte[] value, List<ImapArgument> items)
    {
        Kind = kind;
        Value = value;
        Items = items;
    }

    public ImapArgumentKind Kind { get; }

    /// <summary>The bytes of an atom or string; empty for NIL and lists.</summary>
    public byte[] Value { get; }

    /// <summary>The members of a list; empty otherwise.</summary>
    public IReadOnlyList<ImapArgument> Items { get; }

    internal List<ImapArgument> MutableItems => (List<ImapArgument>)Items;

    /// <summary>True for anything a command may take as an astring (atom, quoted, literal).</summary>
    public bool IsAstring => Kind is ImapArgumentKind.Atom or ImapArgumentKind.Text;

    public static ImapArgument Atom(byte[] value) => new(ImapArgumentKind.Atom, value, s_noItems);

    public static ImapArgument Text(byte[] value) => new(ImapArgumentKind.Text, value, s_noItems);

    public static ImapArgument Nil { get; } = new(ImapArgumentKind.Nil, [], s_noItems);

    public static ImapArgument NewList() => new(ImapArgumentKind.List, [], []);

    /// <summary>Overwrites the value bytes; used for credentials once they are no longer needed.</summary>
    public void Clear()
    {
        Array.Clear(Value);
        foreach (var item in Items)
        {
            item.Clear();
        }
    }
}
