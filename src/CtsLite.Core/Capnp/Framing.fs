namespace CtsLite.Capnp

open System
open System.Buffers.Binary
open System.IO

/// What reading the next message gave.
[<RequireQualifiedAccess>]
type internal FrameOutcome =
    /// A message was loaded into the reader's `Message`.
    | Message
    /// The stream ended cleanly between messages.
    | End
    /// The bytes at the reader's position are not a message (truncated, absurd table, corrupt data).
    | Damaged of DecodeError

/// Reads a stream of Cap'n Proto messages (standard stream framing) one at a time. The stream is
/// read in large chunks into one buffer and each message is a view of its bytes there (no copy);
/// sizes are validated against the limits before the buffer grows, and it only grows to hold the
/// largest message seen.
[<Sealed>]
type internal FrameReader(stream: Stream, source: string, options: ReaderOptions) =
    let message = Message(options)
    // 64 KiB reads keep what was just decompressed in cache while it is parsed (measured: 1 MiB
    // reads were slower); the buffer grows only for larger messages. Only bytes read from the
    // stream are ever looked at, so it need not be zeroed.
    let mutable buffer: byte array = GC.AllocateUninitializedArray(1 <<< 16)
    /// Valid bytes are buffer[start .. stop).
    let mutable start = 0
    let mutable stop = 0
    let mutable eof = false
    /// Stream position of buffer[0].
    let mutable bufferOffset = 0L

    /// Makes `count` bytes available from `start`; false when the stream ends first.
    let ensure (count: int) : bool =
        if stop - start >= count then
            true
        else
            if count > buffer.Length - start then
                let available = stop - start

                if count > buffer.Length then
                    let size = max count (min (2 * buffer.Length) Int32.MaxValue)
                    let larger = GC.AllocateUninitializedArray<byte> size

                    Buffer.BlockCopy(buffer, start, larger, 0, available)
                    buffer <- larger
                else
                    Buffer.BlockCopy(buffer, start, buffer, 0, available)

                bufferOffset <- bufferOffset + int64 start
                start <- 0
                stop <- available

            while not eof && stop - start < count do
                match stream.Read(buffer, stop, buffer.Length - stop) with
                | 0 -> eof <- true
                | n -> stop <- stop + n

            stop - start >= count

    let u32 (at: int) =
        BinaryPrimitives.ReadUInt32LittleEndian(ReadOnlySpan(buffer, at, 4))

    /// The message last loaded; its contents are valid until the next `Next`.
    member _.Message = message

    /// Offset in the decompressed stream where the next message starts.
    member _.Position = bufferOffset + int64 start

    /// The name used in errors.
    member _.Source = source

    /// Loads the next message.
    member this.Next() : FrameOutcome =
        let at = this.Position

        let damaged reason =
            FrameOutcome.Damaged {
                Source = source
                Offset = at
                Reason = reason
            }

        try
            if not (ensure 4) then
                match stop - start with
                | 0 -> FrameOutcome.End
                | n -> damaged (DecodeReason.Truncated(4L, int64 n))
            else
                let segments = int64 (u32 start) + 1L

                if segments > int64 options.MaxSegments then
                    damaged (DecodeReason.SegmentTable $"{segments} segments (limit {options.MaxSegments})")
                else
                    let segments = int segments
                    // Count and sizes, padded so the segments start on a word boundary.
                    let tableBytes = 4 + 4 * segments + (if segments % 2 = 0 then 4 else 0)

                    if not (ensure tableBytes) then
                        damaged (DecodeReason.Truncated(int64 tableBytes, int64 (stop - start)))
                    else
                        let mutable words = 0L

                        for i in 0 .. segments - 1 do
                            words <- words + int64 (u32 (start + 4 + 4 * i))

                        if words > options.MaxMessageWords then
                            damaged (DecodeReason.MessageTooLarge(words, options.MaxMessageWords))
                        else
                            let total = tableBytes + int words * 8

                            if not (ensure total) then
                                damaged (DecodeReason.Truncated(int64 total, int64 (stop - start)))
                            else
                                message.Attach(buffer, segments, bufferOffset)
                                let mutable segmentStart = start + tableBytes

                                for i in 0 .. segments - 1 do
                                    let size = int (u32 (start + 4 + 4 * i)) * 8
                                    message.SetSegment(i, segmentStart, size)
                                    segmentStart <- segmentStart + size

                                start <- start + total
                                FrameOutcome.Message
        with Decode(offset, reason) ->
            FrameOutcome.Damaged {
                Source = source
                Offset = offset
                Reason = reason
            }

/// Parsing single messages held in memory.
[<RequireQualifiedAccess>]
module internal Framing =

    /// Reads the first message of `bytes`.
    let readMessage (source: string) (options: ReaderOptions) (bytes: byte array) : Result<Message, DecodeError> =
        use stream = new MemoryStream(bytes, false)
        let reader = FrameReader(stream, source, options)

        match reader.Next() with
        | FrameOutcome.Message -> Ok reader.Message
        | FrameOutcome.End ->
            Error {
                Source = source
                Offset = 0L
                Reason = DecodeReason.Truncated(8L, 0L)
            }
        | FrameOutcome.Damaged e -> Error e
