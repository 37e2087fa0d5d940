namespace CtsLite.Logs

open System
open System.Collections.Generic
open System.IO
open System.Threading
open CtsLite.Capnp

/// How a `LogSource` reads: the reader's limits and strictness, progress and cancellation.
type LogSourceOptions = {
    Reader: ReaderOptions
    /// Called now and then (every few thousand events, and once at the end) with the part read,
    /// 0–1 (files done plus the part of the current file's compressed bytes).
    Progress: float -> unit
    /// Looked at when a file opens and every few thousand events; once cancelled, the reading
    /// ends with `OperationCanceledException`.
    Cancellation: CancellationToken
} with

    /// `reader`'s limits, no progress, no cancellation.
    static member Of(reader: ReaderOptions) : LogSourceOptions = {
        Reader = reader
        Progress = ignore
        Cancellation = CancellationToken.None
    }

/// What reading a source to its end (or until the visitor stopped) gave.
type LogReading = {
    /// Events delivered.
    Events: int64
    /// Damage met and tolerated, one line each (`file: byte N: reason`).
    Warnings: string list
    /// The first damage met, tolerated or not (a reader that needs events can refuse an input
    /// that gave none: `Events = 0` with this set is a file that is not a log).
    FirstDamage: DecodeError option
}

/// Log files read in order as one stream of events: the one way CtsLite reads a file, a segment
/// folder, a route or a list of uploaded segments, whoever reads it (`cts log`, the tools, the
/// `Log` API). Its damage rule, the same for all of them:
///
/// 1. A file that cannot be opened ends the reading with an `Unreadable` error naming it.
/// 2. Damage (truncation, corruption, garbage, also before the first event) ends its file; every
///    event before it was delivered. A file from which not one event can be read (empty, a
///    compression header only) is damage too (`NoEvents`). With `Strict` the reading ends with
///    that damage as the error; otherwise it becomes a warning and the next file is read.
/// 3. When the whole input gave no event at all, the reading ends with its first damage as the
///    error, strict or not: there is nothing to answer from.
///
/// Read it with `Iter` (a visitor; damage met while visiting ends the file like damage met by the
/// reader) or pull events with `Next` and `Reader`.
[<Sealed>]
type LogSource private (files: string list, openFile: int -> Result<LogReader, string>, options: LogSourceOptions) =
    let all = Array.ofList files
    let warnings = ResizeArray<string>()
    let damages = ResizeArray<DecodeError>()
    let mutable firstDamage: DecodeError option = None
    let mutable error: DecodeError option = None
    let mutable reader: LogReader option = None
    let mutable index = -1
    let mutable events = 0L
    let mutable fileEvents = 0L
    let mutable finished = false

    /// Reads `files` in order.
    new(files: string list, options: LogSourceOptions) =
        let paths = Array.ofList files
        new LogSource(files, (fun i -> LogReader.Open(paths[i], options.Reader)), options)

    /// Reads one log from `stream` (compressed or not, from its start; disposed with the source),
    /// named `name` in warnings and errors.
    static member OfStream(stream: Stream, name: string, options: LogSourceOptions) : LogSource =
        let opened =
            lazy
                (Compression.detectStream stream name options.Reader
                 |> Result.map (fun (rewound, kind) -> LogReader.OfStream(rewound, name, options.Reader, kind)))

        new LogSource([ name ], (fun _ -> opened.Value), options)

    /// How often (in events) the cancellation token is looked at and progress reported.
    static member CheckEvery = 4096

    /// The files of a file, segment folder or route address.
    static member Open(input: string, options: LogSourceOptions) : Result<LogSource, string> =
        Route.resolve input |> Result.map (fun files -> new LogSource(files, options))

    /// The files, in reading order.
    member _.Files: string list = files

    /// The reader of the current event (valid after `Next` returned true, until the next call).
    member _.Reader: LogReader =
        match reader with
        | Some r -> r
        | None -> invalidOp "no current event: call Next first"

    /// Events delivered so far.
    member _.Events = events

    /// Damage met and tolerated so far, one line each.
    member _.Warnings: IReadOnlyList<string> = warnings

    /// Damage met and tolerated so far, as `Warnings` says it, with file, offset and reason.
    member _.Damage: IReadOnlyList<DecodeError> = damages

    /// What ended the reading early (rules 1 and 2), once `Next` returned false.
    member _.Error: DecodeError option = error

    /// The first damage met, tolerated or not.
    member _.FirstDamage: DecodeError option = firstDamage

    /// The part read, 0–1.
    member _.Fraction: float =
        let current =
            match reader with
            | Some r -> r.InputFraction
            | None -> 0.0

        if all.Length = 0 then
            1.0
        else
            Math.Clamp((float (max index 0) + current) / float all.Length, 0.0, 1.0)

    member private _.CloseCurrent() =
        match reader with
        | Some r ->
            let damage =
                match r.Damage with
                | None when fileEvents = 0L ->
                    Some {
                        Source = r.Source
                        Offset = 0L
                        Reason = DecodeReason.NoEvents
                    }
                | d -> d

            match damage with
            | Some e ->
                if firstDamage.IsNone then
                    firstDamage <- Some e

                if options.Reader.Strict then
                    error <- Some e
                    finished <- true
                else
                    warnings.Add(DecodeError.describe e)
                    damages.Add e
            | None -> ()

            (r :> IDisposable).Dispose()
            reader <- None
        | None -> ()

    /// Closes the current file and opens the next; false when the reading is over.
    member private this.NextFile() : bool =
        this.CloseCurrent()

        if finished then
            false
        elif index + 1 >= all.Length then
            finished <- true

            if events = 0L then
                // The damage becomes the error: it is not also a warning.
                firstDamage
                |> Option.iter (fun e ->
                    warnings.Remove(DecodeError.describe e) |> ignore
                    damages.Remove e |> ignore)

                error <-
                    firstDamage
                    |> Option.orElse (
                        Some {
                            Source = ""
                            Offset = 0L
                            Reason = DecodeReason.NoEvents
                        }
                    )

            options.Progress 1.0
            false
        else
            options.Cancellation.ThrowIfCancellationRequested()
            index <- index + 1
            let file = all[index]

            match openFile index with
            | Error reason ->
                error <-
                    Some {
                        Source = file
                        Offset = 0L
                        Reason = DecodeReason.Unreadable reason
                    }

                finished <- true
                false
            | Ok r ->
                reader <- Some r
                fileEvents <- 0L
                true

    member private this.Counted() =
        events <- events + 1L
        fileEvents <- fileEvents + 1L

        if events % int64 LogSource.CheckEvery = 0L then
            options.Cancellation.ThrowIfCancellationRequested()
            options.Progress this.Fraction

    /// Moves to the next event, across files; false at the end (see `Error` and `Warnings`).
    member this.Next() : bool =
        let mutable found = false

        while not found && not finished do
            match reader with
            | Some r when r.Next() ->
                this.Counted()
                found <- true
            | _ -> this.NextFile() |> ignore

        found

    /// Runs `read` over the current event; corrupt bytes met inside it (a `DecodeException`) end
    /// the current file as damage met by the reader does (rule 2), instead of escaping. The
    /// `state` is passed to `read`, so that a caller's hot loop needs no closure per event.
    member this.Guard(state: 'State, read: Action<'State>) : unit =
        FileReading.guard this.Reader (fun () -> read.Invoke state)

    /// Calls `visit` for every event until it returns false or the reading ends. Damage met while
    /// visiting (a corrupt pointer in the current event) ends the file as rule 2 says.
    member this.Iter(visit: LogReader -> bool) : Result<LogReading, DecodeError> =
        let mutable go = true

        while go && this.NextFile() do
            let r = this.Reader

            FileReading.guard r (fun () ->
                while go && r.Next() do
                    this.Counted()
                    go <- visit r)

        if not go then
            this.CloseCurrent()

        match error with
        | Some e -> Error e
        | None ->
            Ok {
                Events = events
                Warnings = List.ofSeq warnings
                FirstDamage = firstDamage
            }

    interface IDisposable with
        member _.Dispose() =
            match reader with
            | Some r -> (r :> IDisposable).Dispose()
            | None -> ()

            reader <- None
