namespace CtsLite.Logs

open System.Collections.Generic
open CtsLite.Capnp

/// The facts `cts log info` reports about a log or route.
type LogInfo = {
    Events: int64
    /// Events by union member name (`unknown(<n>)` for members the schema does not know).
    EventCounts: IReadOnlyDictionary<string, int64>
    /// Earliest and latest logMonoTime in nanoseconds (events are not always in order).
    FirstLogMonoTime: uint64 option
    LastLogMonoTime: uint64 option
    CanFrames: int64
    SendcanFrames: int64
    /// `can` frames by raw src byte.
    CanFramesPerSrc: IReadOnlyDictionary<int, int64>
    CanDistinctAddressesPerSrc: IReadOnlyDictionary<int, int>
    CarFingerprint: string option
    /// Damage met and tolerated (only when not strict): one line each.
    Warnings: string list
}

/// Reading every event of one or more log files in order, as one stream.
[<RequireQualifiedAccess>]
module Logs =

    /// Calls `visit` for every event of `files` in order, by `LogSource`'s damage rule; the
    /// warnings of tolerated damage.
    let iter
        (options: ReaderOptions)
        (files: string list)
        (visit: LogReader -> unit)
        : Result<string list, DecodeError> =
        use source = new LogSource(files, LogSourceOptions.Of options)

        source.Iter(fun reader ->
            visit reader
            true)
        |> Result.map _.Warnings

/// Builds a `LogInfo` one event at a time, for callers that drive the reading themselves.
[<Sealed>]
type internal LogInfoBuilder(schema: Schema, layout: EventLayout) =
    let counts = Array.zeroCreate<int64> 65536
    let perSrc = Array.zeroCreate<int64> 256
    let addresses = Array.init 256 (fun _ -> HashSet<uint32>())
    let perAddress = Dictionary<struct (uint32 * int), int64>()
    let mutable events = 0L
    let mutable first = System.UInt64.MaxValue
    let mutable last = 0UL
    let mutable canFrames = 0L
    let mutable sendcanFrames = 0L
    let mutable fingerprint = None
    let carParams = Event.discriminantOf layout "carParams"

    /// `can` frames per (address, src), filled when `countAddresses` is on.
    member val CountAddresses = false with get, set

    /// `can` frames per (address, src) (empty unless `CountAddresses`).
    member _.FramesPerAddress: IReadOnlyDictionary<struct (uint32 * int), int64> =
        perAddress

    /// Counts the reader's current event.
    member this.Visit(reader: LogReader) : unit =
        let m = reader.Message
        let e = reader.Event
        events <- events + 1L
        let mono = Event.logMonoTime m layout e
        first <- min first mono
        last <- max last mono
        let which = Event.which m layout e
        counts[which] <- counts[which] + 1L

        if which = layout.CanDiscriminant then
            let batch = Event.canBatch m layout e
            let mutable frames = CanCursor(m, layout, batch)

            while frames.MoveNext() do
                perSrc[int frames.Src] <- perSrc[int frames.Src] + 1L
                addresses[int frames.Src].Add frames.Address |> ignore

                if this.CountAddresses then
                    let key = struct (frames.Address, int frames.Src)

                    match perAddress.TryGetValue key with
                    | true, n -> perAddress[key] <- n + 1L
                    | false, _ -> perAddress[key] <- 1L

            canFrames <- canFrames + int64 batch.Count
        elif which = layout.SendcanDiscriminant then
            sendcanFrames <- sendcanFrames + int64 (Event.canList m layout e).Count
        elif fingerprint.IsNone && Some which = carParams then
            match FieldPath.read schema m layout.Event e "carParams.carFingerprint" with
            | Ok(FieldValue.Text t) when t <> "" -> fingerprint <- Some t
            | _ -> ()

    /// The facts so far, with the warnings of the reading.
    member _.Build(warnings: string list) : LogInfo =
        let eventCounts = Dictionary<string, int64>()

        for d in
            [ 0 .. counts.Length - 1 ]
            |> List.filter (fun d -> counts[d] > 0L)
            |> List.sortBy (fun d -> -counts[d], Event.whichName layout d) do
            eventCounts[Event.whichName layout d] <- counts[d]

        let srcs = [ 0..255 ] |> List.filter (fun s -> perSrc[s] > 0L)

        {
            Events = events
            EventCounts = eventCounts
            FirstLogMonoTime = if events > 0L then Some first else None
            LastLogMonoTime = if events > 0L then Some last else None
            CanFrames = canFrames
            SendcanFrames = sendcanFrames
            CanFramesPerSrc = dict [ for s in srcs -> s, perSrc[s] ] |> Dictionary
            CanDistinctAddressesPerSrc = dict [ for s in srcs -> s, addresses[s].Count ] |> Dictionary
            CarFingerprint = fingerprint
            Warnings = warnings
        }

/// Computing `LogInfo`.
[<RequireQualifiedAccess>]
module LogInfo =

    /// Counts everything in one pass over `files`.
    let compute
        (schema: Schema)
        (layout: EventLayout)
        (options: ReaderOptions)
        (files: string list)
        : Result<LogInfo, DecodeError> =
        let builder = LogInfoBuilder(schema, layout)
        Logs.iter options files builder.Visit |> Result.map builder.Build
