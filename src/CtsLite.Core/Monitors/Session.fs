namespace CtsLite.Monitors

open System
open CtsLite.Capnp
open CtsLite.Logs
open CtsLite.Tools

/// Where a session's events come from. (A panda over USB or SocketCAN would be further cases.)
[<RequireQualifiedAccess>]
type MonitorSource =
    /// A recorded log (a file, a segment folder or a route address, or files read in order as one
    /// time line), replayed in log time at `speed` (1.0 as recorded, 0 as fast as possible).
    | Replay of input: ToolInput * speed: float
    /// openpilot's ZMQ bridge on this host (a name or an IP address).
    | Bridge of host: string

/// How many events a session has given its monitor, readable from any thread while the session
/// runs (one writer: the session's thread).
[<Sealed>]
type EventCounter() =
    [<DefaultValue>]
    val mutable private count: int64

    /// The events so far.
    member this.Value: int64 = Threading.Volatile.Read &this.count

    member internal this.Add() =
        Threading.Volatile.Write(&this.count, this.count + 1L)

/// A monitor state that counts the events it is given.
type private Counted(inner: IMonitorState, counter: EventCounter) =
    interface IMonitorState with
        member _.Step(message, event) =
            counter.Add()
            inner.Step(message, event)

        member _.Snapshot() = inner.Snapshot()

/// How a session runs.
type SessionOptions = {
    /// An update at most every this many milliseconds (of log time for a replay).
    UpdateMs: int
    /// A live source with no message for this long reports `silent`.
    SilentAfter: TimeSpan
    /// A live session stops after this long (None: until cancelled).
    Duration: TimeSpan option
    /// A live session records what it receives (a replay has nothing new to record).
    Record: RecordOptions option
    Reader: ReaderOptions
    /// Counts the events as they are given to the monitor.
    Events: EventCounter
    Cancellation: System.Threading.CancellationToken
}

/// What a session read, once it ended.
type SessionOutcome = {
    /// Events given to the monitor.
    Events: int64
    /// Live messages whose event is not their socket's service (counted, never stepped).
    Foreign: int64
    /// Live messages that did not decode (counted and skipped).
    Corrupt: int64
    /// Damage a replay met and tolerated, one line each.
    Warnings: string list
    /// The recording's files, in order.
    Recorded: string list
    /// Ended by the cancellation rather than by its source.
    Stopped: bool
}

/// The one way to run a monitor session, for the CLI, the service and the C# library: the monitor
/// started on its parameters, its source run, every message given to `emit` on the source's
/// thread (a snapshot first, updates, source changes, the final state as `end`).
[<RequireQualifiedAccess>]
module MonitorSession =

    let private cereal =
        lazy
            (let schema = Schema.cereal ()

             match EventLayout.ofSchema schema with
             | Ok layout -> schema, layout
             | Error e -> invalidOp $"the embedded schema has no event layout: {e}")

    /// The monitor with this id, or a line naming the monitors there are.
    let find (monitorId: string) : Result<Monitor, string> =
        match CtsLite.Monitors.Catalog.tryFind monitorId with
        | Some m -> Ok m
        | None ->
            let known =
                String.Join(", ", CtsLite.Monitors.Catalog.monitors |> List.map _.Descriptor.Id)

            Error $"no monitor '{monitorId}' (monitors: {known})"

    /// The files a replay reads, or why it cannot.
    let replayFiles (input: ToolInput) : Result<string list, ToolError> =
        match input with
        | ToolInput.Path path -> Route.resolve path |> Result.mapError ToolError.InputUnavailable
        | ToolInput.Files [] -> Error(ToolError.InputUnavailable "no files to replay")
        | ToolInput.Files files -> Ok files

    /// Runs `monitor` on validated `parameters` (its `file` parameters through `resolveFile`)
    /// over `source` until the source ends or the cancellation stops it; the outcome, or why it
    /// could not start (a bad file, an unknown host, a log damaged before its first event).
    let run
        (monitor: Monitor)
        (parameters: ToolParameters)
        (resolveFile: string -> Result<string, string>)
        (source: MonitorSource)
        (options: SessionOptions)
        (emit: MonitorMessage -> unit)
        : Result<SessionOutcome, ToolError> =
        let schema, layout = cereal.Force()

        let context = {
            Parameters = parameters
            ResolveFile = resolveFile
            Schema = schema
            Layout = layout
        }

        let services = monitor.Services parameters

        let start () =
            monitor.Start context
            |> Result.map (fun state -> Counted(state, options.Events) :> IMonitorState)

        match source with
        | MonitorSource.Replay(input, speed) ->
            match replayFiles input with
            | Error e -> Error e
            | Ok files ->
                match start () with
                | Error e -> Error e
                | Ok state ->
                    let replay = {
                        Speed = speed
                        UpdateMs = options.UpdateMs
                        Reader = options.Reader
                        Cancellation = options.Cancellation
                    }

                    Replay.run services layout state files replay emit
                    |> Result.mapError ToolError.InputDamaged
                    |> Result.map (fun o -> {
                        Events = o.Events
                        Foreign = 0L
                        Corrupt = 0L
                        Warnings = o.Warnings
                        Recorded = []
                        Stopped = o.Stopped
                    })
        | MonitorSource.Bridge host ->
            match start () with
            | Error e -> Error e
            | Ok state ->
                let live: BridgeOptions = {
                    UpdateMs = options.UpdateMs
                    SilentAfter = options.SilentAfter
                    Duration = options.Duration
                    Record = options.Record
                    Reader = options.Reader
                    Cancellation = options.Cancellation
                }

                BridgeSource.run services layout state host live emit
                |> Result.mapError ToolError.InputUnavailable
                |> Result.map (fun o -> {
                    Events = o.Received
                    Foreign = o.Foreign
                    Corrupt = o.Corrupt
                    Warnings = []
                    Recorded = o.Recorded
                    Stopped = options.Cancellation.IsCancellationRequested
                })
