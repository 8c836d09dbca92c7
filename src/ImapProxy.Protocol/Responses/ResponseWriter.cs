using System.Buffers;
using System.Text;

namespace ImapProxy.Protocol.Responses;

/// <summary>Writes IMAP responses straight into a buffer writer (the connection's output pipe).</summary>
public static class ResponseWriter
{
    /// <summary>"tag STATUS [CODE] text\r\n"; the code is omitted when empty.</summary>
    public static void WriteTagged(IBufferWriter<byte> output, ReadOnlySpan<byte> tag, ImapStatus status, ReadOnlySpan<byte> code, ReadOnlySpan<byte> text)
    {
        ArgumentNullException.ThrowIfNull(output);
        Write(output, tag);
        WriteStatusLine(output, status, code, text);
    }

    /// <summary>"* STATUS [CODE] text\r\n".</summary>
    public static void WriteUntaggedStatus(IBufferWriter<byte> output, ImapStatus status, ReadOnlySpan<byte> code, ReadOnlySpan<byte> text)
    {
        ArgumentNullException.ThrowIfNull(output);
        Write(output, "*"u8);
        WriteStatusLine(output, status, code, text);
    }

    /// <summary>"* data\r\n" (CAPABILITY, ID, ...).</summary>
    public static void WriteUntagged(IBufferWriter<byte> output, ReadOnlySpan<byte> data)
    {
        ArgumentNullException.ThrowIfNull(output);
        Write(output, "* "u8);
        Write(output, data);
        Write(output, ImapBytes.CrLf);
    }

    /// <summary>"+ text\r\n" (a continuation request; text may be empty or base64).</summary>
    public static void WriteContinuation(IBufferWriter<byte> output, ReadOnlySpan<byte> text)
    {
        ArgumentNullException.ThrowIfNull(output);
        Write(output, "+ "u8);
        Write(output, text);
        Write(output, ImapBytes.CrLf);
    }

    /// <summary>Writes fixed ASCII text (messages are the proxy's own constants, never client data).</summary>
    public static void WriteAscii(IBufferWriter<byte> output, string text)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(text);
        var span = output.GetSpan(text.Length);
        var written = Encoding.ASCII.GetBytes(text, span);
        output.Advance(written);
    }

    public static ReadOnlySpan<byte> StatusBytes(ImapStatus status) => status switch
    {
        ImapStatus.Ok => "OK"u8,
        ImapStatus.No => "NO"u8,
        ImapStatus.Bad => "BAD"u8,
        ImapStatus.Bye => "BYE"u8,
        _ => "PREAUTH"u8,
    };

    public static void Write(IBufferWriter<byte> output, ReadOnlySpan<byte> bytes)
    {
        ArgumentNullException.ThrowIfNull(output);
        var span = output.GetSpan(bytes.Length);
        bytes.CopyTo(span);
        output.Advance(bytes.Length);
    }

    private static void WriteStatusLine(IBufferWriter<byte> output, ImapStatus status, ReadOnlySpan<byte> code, ReadOnlySpan<byte> text)
    {
        Write(output, " "u8);
        Write(output, StatusBytes(status));
        Write(output, " "u8);
        if (!code.IsEmpty)
        {
            Write(output, "["u8);
            Write(output, code);
            Write(output, "] "u8);
        }

        Write(output, text);
        Write(output, ImapBytes.CrLf);
    }
}
