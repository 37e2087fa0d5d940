namespace CtsLite.Cli

open System
open System.Threading
open Argu
open FsToolkit.ErrorHandling
open CtsLite
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
                // The final state is still written when it is stopped.
                use _ = Signals.onInterrupt cancel.Cancel

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

    // ---- Sessions on the service ------------------------------------------------------------

    let private calling = RunCommands.calling

    let private sourceText (session: Text.Json.JsonElement) =
        let source = session.GetProperty "source"

        let text (name: string) =
            match source.TryGetProperty name with
            | true, v when v.ValueKind = Text.Json.JsonValueKind.String -> Some(v.GetString())
            | _ -> None

        match source.GetProperty("type").GetString() with
        | "zmq" -> $"""zmq {text "host" |> Option.defaultValue "?"}"""
        | other ->
            let what =
                text "path"
                |> Option.orElse (text "upload_id" |> Option.map (fun id -> $"upload {id}"))
                |> Option.defaultValue "uploads"

            $"{other} {what}"

    /// `cts mon start <monitor> --zmq HOST | --replay LOG`: a session on the service; its id on
    /// standard output (the session as JSON with --json).
    let start (ctx: CommandContext) (args: ParseResults<MonStartArgs>) : int =
        let monitorId =
            args
            |> Results.pick (function
                | MonStartArgs.Monitor m -> Some m
                | _ -> None)

        let replay =
            args
            |> Results.tryPick (function
                | MonStartArgs.Replay r -> Some r
                | _ -> None)

        let zmq =
            args
            |> Results.tryPick (function
                | MonStartArgs.Zmq h -> Some h
                | _ -> None)

        let speed =
            args
            |> Results.tryPick (function
                | MonStartArgs.Speed s -> Some s
                | _ -> None)

        let record = Results.has MonStartArgs.Record args

        let recordMaxMb =
            args
            |> Results.tryPick (function
                | MonStartArgs.Record_Max_Mb m -> Some m
                | _ -> None)

        let updateMs =
            args
            |> Results.tryPick (function
                | MonStartArgs.Update_Ms u -> Some u
                | _ -> None)

        let given =
            args
            |> Results.choose (function
                | MonStartArgs.Param p -> Some p
                | _ -> None)
            |> List.traverseResultM Params.parse

        match given with
        | Error bad -> fail ctx bad
        | Ok _ when replay.IsSome = zmq.IsSome -> fail ctx "give one of --replay LOG or --zmq HOST"
        | Ok _ when record && zmq.IsNone -> fail ctx "--record records a live bridge (--zmq HOST)"
        | Ok _ when speed.IsSome && replay.IsNone -> fail ctx "--speed paces a replay (--replay LOG)"
        | Ok given ->
            calling ctx (fun () -> task {
                match! RunCommands.typedParameters ctx "monitors" monitorId given with
                | Error code -> return code
                | Ok parameters ->
                    let! source = task {
                        match zmq, replay with
                        | Some host, _ ->
                            return
                                Ok(
                                    {
                                        Type = "zmq"
                                        Host = Some host
                                        UploadId = None
                                        UploadIds = None
                                        Path = None
                                        Speed = None
                                    }
                                    : Api.MonitorSourceDto
                                )
                        | None, Some log ->
                            let replayOf (uploadId: string option) (path: string option) : Api.MonitorSourceDto = {
                                Type = "replay"
                                Host = None
                                UploadId = uploadId
                                UploadIds = None
                                Path = path
                                Speed = speed
                            }

                            // A local file goes up first; anything else names a path on the service.
                            if IO.File.Exists log then
                                match! RunCommands.upload ctx log with
                                | Ok id -> return Ok(replayOf (Some id) None)
                                | Error e -> return Error e
                            else
                                return Ok(replayOf None (Some log))
                        | None, None -> return invalidOp "one source"
                    }

                    match source with
                    | Error e -> return RunCommands.fail ctx e
                    | Ok source ->
                        let request: Api.MonitorStartRequest = {
                            MonitorId = monitorId
                            Params = Some(Text.Json.JsonSerializer.SerializeToElement parameters)
                            Source = Some source
                            Record = if record then Some true else None
                            RecordMaxMb = recordMaxMb
                            UpdateMs = updateMs
                        }

                        let body = Text.Json.JsonSerializer.Serialize(request, ApiJson.options)

                        use content =
                            new Net.Http.StringContent(body, Text.Encoding.UTF8, "application/json")

                        use! response = ctx.Http.Value.PostAsync($"{ctx.Url}/v1/monitors/start", content)

                        if not response.IsSuccessStatusCode then
                            let! e = RunCommands.problem response
                            return RunCommands.fail ctx e
                        else
                            let! text = response.Content.ReadAsStringAsync()
                            use doc = Text.Json.JsonDocument.Parse text
                            let id = doc.RootElement.GetProperty("session_id").GetString()

                            if ctx.Json then
                                ctx.Out.WriteLine text
                            else
                                ctx.Out.WriteLine id

                                ctx.Err.WriteLine
                                    $"monitor session {id} of {monitorId} started on {ctx.Url} ({sourceText doc.RootElement}); watch it with: cts mon stream {id}"

                            return ExitCode.Ok
            })

    /// `cts mon ls`: the service's sessions, newest first.
    let list (ctx: CommandContext) (args: ParseResults<MonLsArgs>) : int =
        let query =
            [
                match
                    args
                    |> Results.tryPick (function
                        | MonLsArgs.Status s -> Some s
                        | _ -> None)
                with
                | Some s -> $"status={Uri.EscapeDataString s}"
                | None -> ()
                match
                    args
                    |> Results.tryPick (function
                        | MonLsArgs.Limit n -> Some n
                        | _ -> None)
                with
                | Some n -> $"limit={n}"
                | None -> ()
            ]
            |> fun parts -> if parts.IsEmpty then "" else "?" + String.Join("&", parts)

        calling ctx (fun () -> task {
            match! Client.getJson ctx.Http.Value ctx.Url $"/v1/monitors{query}" [] with
            | Error e -> return RunCommands.fail ctx e
            | Ok(_, doc) ->
                use doc = doc

                if ctx.Json then
                    ctx.Out.WriteLine(doc.RootElement.GetRawText())
                else
                    let sessions = [ for s in doc.RootElement.GetProperty("sessions").EnumerateArray() -> s ]

                    if sessions.IsEmpty then
                        ctx.Out.WriteLine "no monitor sessions"
                    else
                        Ui.table ctx [ "SESSION"; "MONITOR"; "STATUS"; "SOURCE"; "EVENTS"; "CLIENTS"; "FROM" ] [
                            for s in sessions ->
                                let counters = s.GetProperty "counters"

                                [
                                    Ui.Plain(s.GetProperty("session_id").GetString())
                                    Ui.Plain(s.GetProperty("monitor_id").GetString())
                                    Ui.State(s.GetProperty("status").GetString())
                                    Ui.Plain(s.GetProperty("source_status").GetString())
                                    Ui.Plain(string (counters.GetProperty("events").GetInt64()))
                                    Ui.Plain(string (counters.GetProperty("clients").GetInt32()))
                                    Ui.Plain(sourceText s)
                                ]
                        ]

                return ExitCode.Ok
        })

    /// The live view of one message on a terminal: the CAN checks as a table, other monitors'
    /// state as indented JSON; redrawn in place.
    let private render (session: string) (message: Text.Json.JsonElement) : string list =
        let kind = message.GetProperty("type").GetString()
        let data = message.GetProperty "data"
        let dropped = message.GetProperty("dropped").GetInt64()

        let head =
            $"""session {session}   {kind} #{message.GetProperty("seq").GetInt64()}   dropped {dropped}   (Ctrl+C to leave; the session goes on)"""

        match data.TryGetProperty "addresses" with
        | true, addresses when addresses.ValueKind = Text.Json.JsonValueKind.Array ->
            let number (e: Text.Json.JsonElement) (name: string) (format: string) =
                match e.GetProperty(name) with
                | v when v.ValueKind = Text.Json.JsonValueKind.Number -> v.GetDouble().ToString(format)
                | _ -> "-"

            [
                head
                $"""window {number data "window_s" "0.##"} s   log time {number data "log_time_s" "0.000"} s   frames {number data "frames" "0"}"""
                String.Format(
                    "{0,4} {1,-6} {2,-28} {3,9} {4,8} {5,9} {6,8} {7,6}",
                    "BUS",
                    "ADDR",
                    "NAME",
                    "RATE_HZ",
                    "AGE_S",
                    "CHANGE_HZ",
                    "ERRORS",
                    ""
                )
                for a in addresses.EnumerateArray() do
                    let bus =
                        match a.GetProperty "bus" with
                        | b when b.ValueKind = Text.Json.JsonValueKind.Number -> string (b.GetInt32())
                        | _ -> "-"

                    let name =
                        match a.GetProperty "name" with
                        | n when n.ValueKind = Text.Json.JsonValueKind.String -> n.GetString()
                        | _ -> ""

                    let errors =
                        a.GetProperty("checksum_errors").GetInt64()
                        + a.GetProperty("counter_errors").GetInt64()

                    let flag =
                        if a.GetProperty("missing").GetBoolean() then "MISSING"
                        elif a.GetProperty("expected").GetBoolean() then "expect"
                        else ""

                    String.Format(
                        "{0,4} {1,-6} {2,-28} {3,9} {4,8} {5,9} {6,8} {7,6}",
                        bus,
                        a.GetProperty("address").GetString(),
                        (if name.Length > 28 then name.Substring(0, 28) else name),
                        number a "rate_hz" "0.0",
                        number a "age_s" "0.000",
                        number a "change_rate_hz" "0.0",
                        errors,
                        flag
                    )
            ]
        | _ ->
            let indented =
                Text.Json.JsonSerializer.Serialize(data, Text.Json.JsonSerializerOptions(WriteIndented = true))

            head :: List.ofArray (indented.Split '\n')

    /// `cts mon stream <id>`: the session's messages until its end, Ctrl+C or SIGTERM (which end
    /// only the watching; the session goes on). On a terminal a table redrawn in place; else (or
    /// with --ndjson or --json) one JSON message per line, flushed per line.
    let stream (ctx: CommandContext) (args: ParseResults<MonStreamArgs>) : int =
        let session =
            args
            |> Results.pick (function
                | MonStreamArgs.Session s -> Some s
                | _ -> None)

        let ndjson =
            Results.has MonStreamArgs.Ndjson args || ctx.Json || Console.IsOutputRedirected

        use cancel = new CancellationTokenSource()
        use _ = Signals.onInterrupt cancel.Cancel

        calling ctx (fun () -> task {
            use request =
                new Net.Http.HttpRequestMessage(
                    Net.Http.HttpMethod.Get,
                    $"{ctx.Url}/v1/monitors/{Uri.EscapeDataString session}/stream"
                )

            request.Headers.Accept.ParseAdd "text/event-stream"

            use! response =
                ctx.Http.Value.SendAsync(request, Net.Http.HttpCompletionOption.ResponseHeadersRead, cancel.Token)

            if not response.IsSuccessStatusCode then
                let! e = RunCommands.problem response
                return RunCommands.fail ctx e
            else
                use! body = response.Content.ReadAsStreamAsync(cancel.Token)
                use reader = new IO.StreamReader(body)
                let mutable ended = false
                let mutable go = true
                let mutable drawn = 0
                let mutable event = ""

                try
                    while go do
                        let! line = reader.ReadLineAsync(cancel.Token)

                        if isNull line then
                            go <- false
                        elif line.StartsWith "event: " then
                            event <- line.Substring 7
                        elif line.StartsWith "data: " then
                            let data = line.Substring 6

                            if ndjson then
                                ctx.Out.WriteLine data
                                ctx.Out.Flush()
                            else
                                use doc = Text.Json.JsonDocument.Parse data

                                if doc.RootElement.GetProperty("type").GetString() <> "heartbeat" then
                                    let lines = render session doc.RootElement

                                    // What fits the terminal; the rest counted on the last line.
                                    let rows =
                                        try
                                            max 5 (Console.WindowHeight - 1)
                                        with :? IO.IOException ->
                                            lines.Length

                                    let lines =
                                        if lines.Length <= rows then
                                            lines
                                        else
                                            List.truncate (rows - 1) lines
                                            @ [ $"… {lines.Length - rows + 1} more rows (--ndjson for all)" ]

                                    // Home, each line cleared to its end, then the rest below.
                                    let text = Text.StringBuilder("\u001b[H")

                                    for l in lines do
                                        text.Append(l).Append("\u001b[K\n") |> ignore

                                    text.Append("\u001b[J") |> ignore

                                    if drawn = 0 then
                                        ctx.Out.Write "\u001b[2J"

                                    ctx.Out.Write(text.ToString())
                                    ctx.Out.Flush()
                                    drawn <- drawn + 1

                            if event = "end" then
                                ended <- true
                                go <- false
                with :? OperationCanceledException when cancel.IsCancellationRequested ->
                    ()

                if ended || cancel.IsCancellationRequested then
                    return ExitCode.Ok
                else
                    ctx.Err.WriteLine $"error: the stream of session {session} ended before its end"
                    return ExitCode.ServiceError
        })

    /// `cts mon stop <id>`: stops the session (idempotent) and says how it ended.
    let stop (ctx: CommandContext) (args: ParseResults<MonStopArgs>) : int =
        let session = args |> Results.pick (fun (MonStopArgs.Session s) -> Some s)

        calling ctx (fun () -> task {
            use! response =
                ctx.Http.Value.PostAsync($"{ctx.Url}/v1/monitors/{Uri.EscapeDataString session}/stop", null)

            if not response.IsSuccessStatusCode then
                let! e = RunCommands.problem response
                return RunCommands.fail ctx e
            else
                let! text = response.Content.ReadAsStringAsync()

                if ctx.Json then
                    ctx.Out.WriteLine text
                else
                    use doc = Text.Json.JsonDocument.Parse text
                    let s = doc.RootElement

                    let reason =
                        match s.GetProperty "reason" with
                        | r when r.ValueKind = Text.Json.JsonValueKind.String -> $": {r.GetString()}"
                        | _ -> ""

                    let counters = s.GetProperty "counters"

                    ctx.Out.WriteLine
                        $"""session {session} {s.GetProperty("status").GetString()}{reason} ({counters.GetProperty("events").GetInt64()} events, {counters.GetProperty("corrupt").GetInt64()} corrupt, {counters.GetProperty("dropped").GetInt64()} dropped for slow watchers)"""

                    for r in s.GetProperty("recordings").EnumerateArray() do
                        ctx.Out.WriteLine $"recorded upload {r.GetString()}"

                return ExitCode.Ok
        })
