namespace CtsLite.Capnp

open System
open System.Buffers.Binary
open System.IO

/// What reading the next message gave.
[<RequireQualifiedAccess>]
type FrameOutcome =
    /// A message was loaded into the reader's `Message`.
    | Message
    /// The stream ended cleanly between messages.
    | End
    /// The bytes at the reader's position are not a message (truncated, absurd table, corrupt data).
    | Damaged of DecodeError

/// Reads a stream of Cap'n Proto messages (standard stream framing) one at a time into one
/// reusable `Message`: sizes are validated against the limits before any allocation, and the
/// buffer only grows to the largest message seen.
[<Sealed>]
type FrameReader(stream: Stream, source: string, options: ReaderOptions) =
    let message = Message(options)
    let header: byte array = Array.zeroCreate (4 * (options.MaxSegments + 2))
    let mutable position = 0L

    /// Reads exactly `count` bytes unless the stream ends first; returns how many were read.
    let fill (target: byte array) (offset: int) (count: int) : int =
        let mutable total = 0
        let mutable reading = true

        while reading && total < count do
            let n = stream.Read(target, offset + total, count - total)

            if n = 0 then reading <- false else total <- total + n

        total

    /// The message last loaded; its contents are valid until the next `Next`.
    member _.Message = message

    /// Offset in the decompressed stream where the next message starts.
    member _.Position = position

    /// The name used in errors.
    member _.Source = source

    /// Loads the next message.
    member _.Next() : FrameOutcome =
        let start = position

        let damaged reason =
            FrameOutcome.Damaged {
                Source = source
                Offset = start
                Reason = reason
            }

        try
            match fill header 0 4 with
            | 0 -> FrameOutcome.End
            | n when n < 4 -> damaged (DecodeReason.Truncated(4L, int64 n))
            | _ ->
                let segments =
                    int64 (BinaryPrimitives.ReadUInt32LittleEndian(ReadOnlySpan(header, 0, 4))) + 1L

                if segments > int64 options.MaxSegments then
                    damaged (DecodeReason.SegmentTable $"{segments} segments (limit {options.MaxSegments})")
                else
                    let segments = int segments
                    // Sizes, padded so the segments start on a word boundary.
                    let tableBytes = 4 * segments + (if segments % 2 = 0 then 4 else 0)
                    let got = fill header 4 tableBytes

                    if got < tableBytes then
                        damaged (DecodeReason.Truncated(int64 (4 + tableBytes), int64 (4 + got)))
                    else
                        let mutable words = 0L

                        for i in 0 .. segments - 1 do
                            words <-
                                words
                                + int64 (BinaryPrimitives.ReadUInt32LittleEndian(ReadOnlySpan(header, 4 + 4 * i, 4)))

                        if words > options.MaxMessageWords then
                            damaged (DecodeReason.MessageTooLarge(words, options.MaxMessageWords))
                        else
                            let bytes = int words * 8
                            let dataStart = start + 4L + int64 tableBytes
                            let buffer = message.Prepare(segments, bytes, dataStart)
                            let mutable at = 0

                            for i in 0 .. segments - 1 do
                                let size =
                                    int (BinaryPrimitives.ReadUInt32LittleEndian(ReadOnlySpan(header, 4 + 4 * i, 4)))
                                    * 8

                                message.SetSegment(i, at, size)
                                at <- at + size

                            let read = fill buffer 0 bytes

                            if read < bytes then
                                damaged (DecodeReason.Truncated(int64 bytes, int64 read))
                            else
                                position <- dataStart + int64 bytes
                                FrameOutcome.Message
        with DecodeException(offset, reason) ->
            FrameOutcome.Damaged {
                Source = source
                Offset = offset
                Reason = reason
            }

/// Parsing single messages held in memory.
[<RequireQualifiedAccess>]
module Framing =

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
