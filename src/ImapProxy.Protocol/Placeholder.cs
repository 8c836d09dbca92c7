namespace ImapProxy.Protocol; internal static class Placeholder { }
