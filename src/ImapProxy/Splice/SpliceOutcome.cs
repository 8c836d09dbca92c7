namespace ImapProxy.Splice;

/// <summary>Why a spliced session ended. Never an exception: every end is one of these.</summary>
public enum SpliceOutcome
{
    ClientClosed,
    BackendClosed,
    ClientError,
    BackendError,
    /// <summary>The session was told to end (shutdown, kick).</summary>
    Cancelled,
}

/// <summary>
/// The end of a splice with the bytes each way. <see cref="AtResponseBoundary"/> says whether the client was
/// left between two response lines, where the proxy may still say "* BYE" without corrupting anything;
/// <see cref="BackendSaidBye"/> whether the backend announced its close (a logout) or just went away.
/// </summary>
public readonly record struct SpliceResult(SpliceOutcome Outcome, long BytesFromClient, long BytesFromBackend, bool AtResponseBoundary, bool BackendSaidBye);
