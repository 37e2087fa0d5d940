namespace CtsLite.Logs

open System
open System.IO
open CtsLite.Capnp

/// Reads the events of one log file (or stream) in order, one reusable message at a time.
/// Damage ends the reading and is kept in `Damage`: the events before it were all delivered.
[<Sealed>]
type LogReader private (stream: Stream, source: string, options: ReaderOptions, compression: Compression) =
    let frames = FrameReader(stream, source, options)
    let mutable damage: DecodeError option = None
    let mutable root = StructRef.Empty
    let mutable finished = false

    /// Opens a log file, detecting its compression.
    static member Open(path: string, options: ReaderOptions) : Result<LogReader, string> =
        Compression.openFile path options
        |> Result.map (fun (stream, kind) -> new LogReader(stream, path, options, kind))

    /// Reads an already decompressed stream (or wraps it per `compression`).
    static member OfStream
        (stream: Stream, source: string, options: ReaderOptions, compression: Compression)
        : LogReader =
        new LogReader(Compression.decompress stream compression options, source, options, compression)

    /// How the input was compressed.
    member _.Compression = compression

    /// The name used in errors.
    member _.Source = source

    /// The current event's message (valid until the next `Next`).
    member _.Message = frames.Message

    /// The current event's root struct.
    member _.Event = root

    /// Offset of the next message in the decompressed stream.
    member _.Position = frames.Position

    /// How far through the (compressed) file the reading is, 0–1, for progress reports.
    member _.InputFraction: float =
        match stream with
        | :? DecompressedStream as decompressed -> decompressed.InputFraction
        | _ -> 0.0

    /// What stopped the reading early, if anything.
    member _.Damage = damage

    /// Advances to the next event; false at the end or at damage.
    member _.Next() : bool =
        if finished then
            false
        else
            match frames.Next() with
            | FrameOutcome.Message ->
                try
                    root <- frames.Message.Root
                    true
                with Decode(offset, reason) ->
                    damage <-
                        Some {
                            Source = source
                            Offset = offset
                            Reason = reason
                        }

                    finished <- true
                    false
            | FrameOutcome.End ->
                finished <- true
                false
            | FrameOutcome.Damaged e ->
                damage <- Some e
                finished <- true
                false

    /// Records damage found while reading the current event's contents.
    member internal _.MarkDamaged(e: DecodeError) =
        damage <- Some e
        finished <- true

    interface IDisposable with
        member _.Dispose() = stream.Dispose()

/// What every multi-file reader does at the edges of a file, in one place.
[<RequireQualifiedAccess>]
module internal FileReading =

    /// The error for a file that could not be opened (the reason comes from `LogReader.Open`,
    /// which already names the file).
    let openFailure (file: string) (reason: string) : DecodeError = {
        Source = file
        Offset = 0L
        Reason = DecodeReason.Unreadable reason
    }

    /// Runs `f` on the reader; damage found inside it (a corrupt pointer met while reading the
    /// current event) ends the file like damage met by `Next`, instead of escaping.
    /// Inlined with its lambda, so that a per-event caller allocates no closure.
    let inline guard (reader: LogReader) ([<InlineIfLambda>] f: unit -> unit) : unit =
        try
            f ()
        with Decode(offset, reason) ->
            reader.MarkDamaged {
                Source = reader.Source
                Offset = offset
                Reason = reason
            }

    /// After a file: its damage becomes the error in strict mode, else a warning.
    let settle (options: ReaderOptions) (reader: LogReader) (warnings: ResizeArray<string>) : DecodeError option =
        match reader.Damage with
        | Some e when options.Strict -> Some e
        | Some e ->
            warnings.Add(DecodeError.describe e)
            None
        | None -> None
