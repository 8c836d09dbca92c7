namespace ImapProxy.Protocol.Responses;

public enum ImapStatus
{
    Ok,
    No,
    Bad,
    Bye,
    PreAuth,
}
