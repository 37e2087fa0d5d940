namespace CtsLite.Cli

open System
open System.Threading
open Argu
open FsToolkit.ErrorHandling
open CtsLite.Capnp
open CtsLite.Logs
open CtsLite.Tools
open CtsLite.Monitors

/// `cts mon …`: live monitors.
[<RequireQualifiedAccess>]
module MonCommands =

    let private fail (ctx: CommandContext) (message: string) =
        ctx.Err.WriteLine($"error: {message}")
        ExitCode.ClientError

    /// `cts mon run <monitor> --replay LOG`: the monitor here, over a replayed log, one JSON
    /// message per line on standard output (flushed per line: a pipe sees each as it comes).
    let run (ctx: CommandContext) (args: ParseResults<MonRunArgs>) : int =
        let monitorId =
            args
            |> Results.pick (function
                | MonRunArgs.Monitor m -> Some m
                | _ -> None)

        let replay =
            args
            |> Results.tryPick (function
                | MonRunArgs.Replay r -> Some r
                | _ -> None)

        let zmq =
            args
            |> Results.tryPick (function
                | MonRunArgs.Zmq h -> Some h
                | _ -> None)

        let duration =
            args
            |> Results.tryPick (function
                | MonRunArgs.Duration d -> Some d
                | _ -> None)

        let speed =
            args
            |> Results.tryPick (function
                | MonRunArgs.Speed s -> Some s
                | _ -> None)
            |> Option.defaultValue 1.0

        let updateMs =
            args
            |> Results.tryPick (function
                | MonRunArgs.Update_Ms u -> Some u
                | _ -> None)
            |> Option.defaultValue 100

        let record =
            args
            |> Results.tryPick (function
                | MonRunArgs.Record r -> Some r
                | _ -> None)

        let recordMaxMb =
            args
            |> Results.tryPick (function
                | MonRunArgs.Record_Max_Mb m -> Some m
                | _ -> None)
            |> Option.defaultValue 100

        let onlyFinal = Results.has MonRunArgs.Final args

        let given =
            args
            |> Results.choose (function
                | MonRunArgs.Param p -> Some p
                | _ -> None)
            |> List.traverseResultM Params.parse

        match MonitorSession.find monitorId, given with
        | Error e, _ -> fail ctx e
        | _, Error bad -> fail ctx bad
        | _ when not (Double.IsFinite speed) || speed < 0.0 ->
            fail ctx $"--speed must be 0 (as fast as possible) or a positive factor, not {speed}"
        | _ when updateMs < 1 -> fail ctx $"--update-ms must be at least 1, not {updateMs}"
        | _ when replay.IsSome = zmq.IsSome -> fail ctx "give one of --replay LOG or --zmq HOST"
        | _ when record.IsSome && zmq.IsNone -> fail ctx "--record records a live bridge (--zmq HOST)"
        | _ when recordMaxMb < 1 -> fail ctx $"--record-max-mb must be at least 1, not {recordMaxMb}"
        | _ when record |> Option.exists IO.File.Exists ->
            fail ctx $"--record {record.Value}: the file exists (a recording never overwrites one)"
        | _ when duration |> Option.exists (fun d -> not (Double.IsFinite d) || d <= 0.0) ->
            fail ctx $"--duration must be a positive number of seconds, not {duration.Value}"
        | Ok monitor, Ok given ->
            match CtsLite.Monitors.Catalog.validate monitor given with
            | Error errors -> fail ctx (ToolError.describe (ToolError.InvalidParameters errors))
            | Ok parameters ->
                use cancel = new CancellationTokenSource()

                let onCancel =
                    ConsoleCancelEventHandler(fun _ e ->
                        e.Cancel <- true
                        cancel.Cancel())

                Console.CancelKeyPress.AddHandler onCancel

                // SIGTERM (a service manager, `timeout`, a pipeline's end) stops it like Ctrl+C:
                // the final state is still written.
                use _ =
                    Runtime.InteropServices.PosixSignalRegistration.Create(
                        Runtime.InteropServices.PosixSignal.SIGTERM,
                        fun context ->
                            context.Cancel <- true
                            cancel.Cancel()
                    )

                let emit (m: MonitorMessage) =
                    if not onlyFinal || m.Kind = MonitorMessageKind.End then
                        ctx.Out.WriteLine(MonitorMessage.toJson m)
                        ctx.Out.Flush()

                let source =
                    match replay, zmq with
                    | Some path, _ -> MonitorSource.Replay(ToolInput.Path path, speed)
                    | None, Some host -> MonitorSource.Bridge host
                    | None, None -> invalidOp "one source"

                let options: SessionOptions = {
                    UpdateMs = updateMs
                    SilentAfter = TimeSpan.FromSeconds 2.0
                    Duration = duration |> Option.map TimeSpan.FromSeconds
                    Record =
                        record
                        |> Option.map (fun path -> {
                            Path = path
                            MaxBytes = int64 recordMaxMb * 1_000_000L
                            SegmentLength = None
                            Closed = fun file -> ctx.Err.WriteLine $"recorded {file}"
                        })
                    Reader = ReaderOptions.Default
                    Events = EventCounter()
                    Cancellation = cancel.Token
                }

                try
                    match MonitorSession.run monitor parameters ToolRunner.localFiles source options emit with
                    | Error(ToolError.InputUnavailable e) when zmq.IsSome -> fail ctx $"--zmq: {e}"
                    | Error e -> fail ctx (ToolError.describe e)
                    | Ok outcome ->
                        for w in outcome.Warnings do
                            ctx.Err.WriteLine($"warning: {w}")

                        if outcome.Corrupt > 0L || outcome.Foreign > 0L then
                            ctx.Err.WriteLine(
                                $"warning: {outcome.Corrupt} message(s) did not decode, {outcome.Foreign} carried another service's event (counted, skipped)"
                            )

                        if outcome.Stopped then
                            ctx.Err.WriteLine "stopped"

                        ExitCode.Ok
                finally
                    Console.CancelKeyPress.RemoveHandler onCancel
