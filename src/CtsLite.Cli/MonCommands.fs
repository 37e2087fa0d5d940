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

        match CtsLite.Monitors.Catalog.tryFind monitorId, given with
        | None, _ ->
            let known =
                String.Join(", ", CtsLite.Monitors.Catalog.monitors |> List.map _.Descriptor.Id)

            fail ctx $"no monitor '{monitorId}' (monitors: {known})"
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
        | Some(monitor: Monitor), Ok given ->
            match CtsLite.Monitors.Catalog.validate monitor given with
            | Error errors -> fail ctx (ToolError.describe (ToolError.InvalidParameters errors))
            | Ok parameters ->
                match replay |> Option.map Route.resolve with
                | Some(Error e) -> fail ctx e
                | files ->
                    let schema = Schema.cereal ()

                    let layout =
                        EventLayout.ofSchema schema
                        |> Result.defaultWith (fun e -> invalidOp $"the embedded schema has no event layout: {e}")

                    let context = {
                        Parameters = parameters
                        ResolveFile = ToolRunner.localFiles
                        Schema = schema
                        Layout = layout
                    }

                    match monitor.Start context with
                    | Error e -> fail ctx (ToolError.describe e)
                    | Ok state ->
                        use cancel = new CancellationTokenSource()

                        let onCancel =
                            ConsoleCancelEventHandler(fun _ e ->
                                e.Cancel <- true
                                cancel.Cancel())

                        Console.CancelKeyPress.AddHandler onCancel

                        // SIGTERM (a service manager, `timeout`, a pipeline's end) stops it like
                        // Ctrl+C: the final state is still written.
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

                        let options = {
                            Speed = speed
                            UpdateMs = updateMs
                            Reader = ReaderOptions.Default
                            Cancellation = cancel.Token
                        }

                        try
                            match files, zmq with
                            | Some(Ok files), _ ->
                                match Replay.run (monitor.Services parameters) layout state files options emit with
                                | Error e -> fail ctx (DecodeError.describe e)
                                | Ok outcome ->
                                    for w in outcome.Warnings do
                                        ctx.Err.WriteLine($"warning: {w}")

                                    if outcome.Stopped then
                                        ctx.Err.WriteLine "stopped"

                                    ExitCode.Ok
                            | _, Some host ->
                                let live = {
                                    UpdateMs = updateMs
                                    SilentAfter = TimeSpan.FromSeconds 2.0
                                    Duration = duration |> Option.map TimeSpan.FromSeconds
                                    Record = record
                                    RecordMaxBytes = int64 recordMaxMb * 1_000_000L
                                    Reader = ReaderOptions.Default
                                    Cancellation = cancel.Token
                                }

                                match BridgeSource.run (monitor.Services parameters) layout state host live emit with
                                | Error e -> fail ctx $"--zmq: {e}"
                                | Ok outcome ->
                                    for f in outcome.Recorded do
                                        ctx.Err.WriteLine $"recorded {f}"

                                    if outcome.Corrupt > 0L || outcome.Foreign > 0L then
                                        ctx.Err.WriteLine(
                                            $"warning: {outcome.Corrupt} message(s) did not decode, {outcome.Foreign} carried another service's event (counted, skipped)"
                                        )

                                    ExitCode.Ok
                            | _ -> invalidOp "one source"
                        finally
                            Console.CancelKeyPress.RemoveHandler onCancel
