namespace CtsLite.Cli

open System
open System.Globalization
open Argu
open CtsLite.Can
open CtsLite.Capnp
open CtsLite.Logs

/// `cts dbc …`.
[<RequireQualifiedAccess>]
module DbcCommands =

    /// `cts dbc check`: exit 0 only when every file is clean. A file is a path or the name of a
    /// built-in DBC. `--json`: `{"files": [{"file", "ok", "messages", "signals", "errors"}]}`.
    let check (ctx: CommandContext) (args: ParseResults<DbcCheckArgs>) : int =
        let results = [
            for file in args |> Results.pick (fun (DbcCheckArgs.Files f) -> Some f) -> file, Dbc.load file
        ]

        if ctx.Json then
            let body = {|
                files = [
                    for file, result in results ->
                        match result with
                        | Ok db -> {|
                            file = file
                            ok = true
                            messages = db.Messages.Length
                            signals = db.Messages |> List.sumBy (fun m -> m.Signals.Length)
                            errors = []
                          |}
                        | Error errors -> {|
                            file = file
                            ok = false
                            messages = 0
                            signals = 0
                            errors = [
                                for e in errors ->
                                    {|
                                        file = e.File
                                        line = e.Line
                                        column = e.Column
                                        problem = DbcProblem.describe e.Problem
                                    |}
                            ]
                          |}
                ]
            |}

            ctx.Out.WriteLine(
                Text.Json.JsonSerializer.Serialize(body, Text.Json.JsonSerializerOptions(WriteIndented = true))
            )
        else
            for file, result in results do
                match result with
                | Ok db ->
                    let signals = db.Messages |> List.sumBy (fun m -> m.Signals.Length)
                    ctx.Out.WriteLine($"{file}: {db.Messages.Length} messages, {signals} signals")
                | Error errors ->
                    for e in errors do
                        ctx.Out.WriteLine(DbcError.describe e)

        if results |> List.forall (snd >> Result.isOk) then
            ExitCode.Ok
        else
            ExitCode.ClientError

    let private csvField (s: string) =
        if s.IndexOfAny([| ','; '"'; '\n'; '\r' |]) >= 0 then
            "\"" + s.Replace("\"", "\"\"") + "\""
        else
            s

    /// `cts dbc decode`.
    let decode (ctx: CommandContext) (args: ParseResults<DbcDecodeArgs>) : int =
        let signalNames =
            args
            |> Results.choose (function
                | DbcDecodeArgs.Signal s -> Some s
                | _ -> None)

        let buses =
            args
            |> Results.choose (function
                | DbcDecodeArgs.Bus b -> Some b
                | _ -> None)
            |> Set.ofList

        match
            args
            |> Results.pick (function
                | DbcDecodeArgs.Inputs(d, l) -> Some(d, l)
                | _ -> None)
        with
        | dbcPath, input ->
            match Dbc.load dbcPath with
            | Error errors ->
                for e in errors do
                    ctx.Err.WriteLine(DbcError.describe e)

                ExitCode.ClientError
            | Ok db ->
                match DecodePlan.create db signalNames with
                | Error bad ->
                    ctx.Err.WriteLine($"error: {bad} (in {dbcPath})")
                    ExitCode.ClientError
                | Ok plan ->
                    let out = ctx.Out
                    let invariant = CultureInfo.InvariantCulture

                    let write (time: float) (bus: int) (address: uint32) (payload: byte array) =
                        if buses.IsEmpty || buses.Contains bus then
                            match plan.TryFind address with
                            | Some(message, signals) ->
                                let span = ReadOnlySpan payload
                                let timeText = time.ToString("F9", invariant)

                                for s in signals do
                                    if DecodePlan.present message s span then
                                        let v = Signal.decode s span
                                        let label = Signal.label s v.Raw |> Option.defaultValue ""
                                        let value = v.Physical.ToString("R", invariant)

                                        out.WriteLine(
                                            $"{timeText},{bus},0x{address:X3},{message.Name},{s.Name},{value},{csvField label}"
                                        )
                            | None -> ()

                    let fromText (frames: Result<CanFrame list, string list>) =
                        match frames with
                        | Error errors ->
                            for e in errors do
                                ctx.Err.WriteLine e

                            ExitCode.ClientError
                        | Ok frames ->
                            out.WriteLine "time_s,bus,address,message,signal,value,label"

                            for (f: CanFrame) in frames do
                                write f.Seconds f.Bus f.Address f.Payload

                            out.Flush()
                            ExitCode.Ok

                    match CanText.sniff input with
                    | Some CanTextKind.Candump -> fromText (CanText.readCandump input (IO.File.ReadLines input))
                    | Some CanTextKind.Csv ->
                        fromText (CanText.readCsv input (IO.File.ReadLines input) |> Result.map (List.map _.Frame))
                    | None ->
                        match
                            Log.events
                                {
                                    ReaderOptions.Default with
                                        Strict = Results.has DbcDecodeArgs.Strict args
                                }
                                None
                                [ "can" ]
                                input
                        with
                        | Error e ->
                            ctx.Err.WriteLine($"error: {e}")
                            ExitCode.ClientError
                        | Ok events ->
                            out.WriteLine "time_s,bus,address,message,signal,value,label"

                            for e in events do
                                for (f: CanFrame) in e.CanFrames() do
                                    write f.Seconds f.Bus f.Address f.Payload

                            out.Flush()

                            for w in events.Warnings do
                                ctx.Err.WriteLine($"warning: {w}")

                            match events.Error with
                            | Some e ->
                                ctx.Err.WriteLine($"error: {DecodeError.describe e}")
                                ExitCode.ClientError
                            | None -> ExitCode.Ok
