namespace CtsLite.Monitors

open System
open System.Diagnostics
open System.Threading
open CtsLite.Capnp
open CtsLite.Logs

/// How a recorded log is replayed into a monitor.
type ReplayOptions = {
    /// Log time per wall time: 1.0 as recorded, 2.0 twice as fast, 0 as fast as possible.
    Speed: float
    /// Updates every this many milliseconds of log time (wall time at speed 1).
    UpdateMs: int
    Reader: ReaderOptions
    Cancellation: CancellationToken
}

/// What a replay read.
type ReplayOutcome = {
    /// Events of the monitor's services delivered to it.
    Events: int64
    /// Damage met and tolerated, one line each.
    Warnings: string list
    /// Stopped by the cancellation before the end of the input (the `end` message holds the
    /// state at that moment).
    Stopped: bool
}

/// Replaying log files (a file, a segment folder, a route) into a monitor: the events of the
/// services it reads, in log order, paced in log time, through the one log source.
[<RequireQualifiedAccess>]
module Replay =

    /// Replays `files` into `state`; `emit` gets a snapshot first, an update every `UpdateMs` of
    /// log time, and the final state as `end` (also when the cancellation stops it).
    let run
        (services: string list)
        (layout: EventLayout)
        (state: IMonitorState)
        (files: string list)
        (options: ReplayOptions)
        (emit: MonitorMessage -> unit)
        : Result<ReplayOutcome, DecodeError> =
        let wanted = Array.zeroCreate<bool>(layout.Event.UnionMembers.Length + 1)

        for s in services do
            match Event.discriminantOf layout s with
            | Some d -> wanted[d] <- true
            | None -> ()

        let mutable seq = 0L

        let send kind =
            seq <- seq + 1L

            emit {
                Kind = kind
                Seq = seq
                T = MonitorSupport.unixNow ()
                Data = state.Snapshot()
            }

        send MonitorMessageKind.Snapshot
        let updateNs = int64 options.UpdateMs * 1_000_000L
        let clock = Stopwatch.StartNew()
        let mutable first = Int64.MinValue
        let mutable nextUpdate = Int64.MinValue
        let mutable delivered = 0L

        let source =
            new LogSource(
                files,
                {
                    Reader = options.Reader
                    Progress = ignore
                    Cancellation = options.Cancellation
                }
            )

        use _ = source

        let visit (reader: LogReader) =
            let m = reader.Message
            let e = reader.Event
            let which = Event.which m layout e

            if which >= 0 && which < wanted.Length && wanted[which] then
                let ns = int64 (Event.logMonoTime m layout e)

                if first = Int64.MinValue then
                    first <- ns
                    nextUpdate <- ns + updateNs

                if options.Speed > 0.0 then
                    // Wait until the wall clock reaches the event's place in log time (waiting on
                    // the cancellation, so a stop is immediate).
                    let due = float (ns - first) / 1e9 / options.Speed
                    let ahead = due - clock.Elapsed.TotalSeconds

                    if ahead > 0.001 then
                        options.Cancellation.WaitHandle.WaitOne(TimeSpan.FromSeconds ahead) |> ignore

                    options.Cancellation.ThrowIfCancellationRequested()

                while ns >= nextUpdate do
                    send MonitorMessageKind.Update
                    nextUpdate <- nextUpdate + updateNs

                state.Step(m, e)
                delivered <- delivered + 1L

            true

        let read =
            try
                Ok(source.Iter visit)
            with :? OperationCanceledException when options.Cancellation.IsCancellationRequested ->
                Error()

        match read with
        | Ok(Ok reading) ->
            send MonitorMessageKind.End

            Ok {
                Events = delivered
                Warnings = reading.Warnings
                Stopped = false
            }
        | Ok(Error e) -> Error e
        | Error() ->
            send MonitorMessageKind.End

            Ok {
                Events = delivered
                Warnings = List.ofSeq source.Warnings
                Stopped = true
            }
