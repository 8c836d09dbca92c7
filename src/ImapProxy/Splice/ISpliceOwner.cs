using ImapProxy.Tls;

namespace ImapProxy.Splice;

/// <summary>
/// Whoever started a splice, told once when it has ended. Nothing awaits a splice: an idle session keeps no task,
/// continuation or async frame for the hours it rests in IDLE, only the splice's own objects and its owner.
/// </summary>
internal interface ISpliceOwner
{
    /// <summary>
    /// The splice takes over the TLS client's record layer, before it begins. The layer holds a reference on the
    /// connection's handle and is the owner's from now on: the splice uses it until its end, then the owner may write
    /// through it, and must <see cref="TlsRecordLayer.Release"/> it (keeping the TLS stream) or
    /// <see cref="TlsRecordLayer.Close"/> it (having let go of the stream, which neither the splice nor the layer needs).
    /// </summary>
    void TlsTakenOver(TlsRecordLayer recordLayer);

    /// <summary>
    /// The splice has ended with <paramref name="result"/>, or failed with <paramref name="error"/> (a bug; the result
    /// is then default). Both sockets are the owner's again. Called on the thread pool, or on the engine thread where
    /// the engine runs continuations inline; it must not block.
    /// </summary>
    void SpliceEnded(SpliceResult result, Exception? error);
}
