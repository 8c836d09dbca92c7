namespace ImapProxy.Splice;

/// <summary>
/// Whoever started a splice, told once when it has ended. Nothing awaits a splice: an idle session keeps no task,
/// continuation or async frame for the hours it rests in IDLE, only the splice's own objects and its owner.
/// </summary>
internal interface ISpliceOwner
{
    /// <summary>
    /// The splice has ended with <paramref name="result"/>, or failed with <paramref name="error"/> (a bug; the result
    /// is then default). Both sockets are the owner's again. Called on the thread pool, or on the engine thread where
    /// the engine runs continuations inline; it must not block.
    /// </summary>
    void SpliceEnded(SpliceResult result, Exception? error);
}
