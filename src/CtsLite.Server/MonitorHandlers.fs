namespace CtsLite.Server

open System
open System.Net.WebSockets
open System.Text
open System.Text.Json
open System.Threading
open System.Threading.Tasks
open Microsoft.AspNetCore.Http
open Microsoft.Extensions.DependencyInjection
open CtsLite
open CtsLite.Monitors
open CtsLite.Tools
open CtsLite.Server.Http

/// Why a session was not started.
[<RequireQualifiedAccess>]
type StartSessionError =
    | UnknownMonitor of detail: string
    | Invalid of Api.FieldError list
    | TooMany of limit: int

/// Starting a monitor session: the request checked as a run's is (the monitor, its parameters
/// with JSON pointers, its files, its source), then handed to `MonitorSessions`.
[<RequireQualifiedAccess>]
module SessionStart =

    let private field (pointer: string) (detail: string) : Api.FieldError = { Pointer = pointer; Detail = detail }

    /// The default `update_ms`.
    [<Literal>]
    let DefaultUpdateMs = 100

    /// The default `record_max_mb`.
    [<Literal>]
    let DefaultRecordMaxMb = 100

    let private given (request: Api.MonitorStartRequest) =
        match request.Params with
        | Some p when p.ValueKind = JsonValueKind.Object -> Ok(RunParameters.ofObject p)
        | Some p when p.ValueKind = JsonValueKind.Null -> Ok []
        | None -> Ok []
        | Some _ -> Error [ field "/params" "must be an object" ]

    let private ranged (pointer: string) (lo: int) (hi: int) (fallback: int) (value: int option) =
        match value with
        | None -> Ok fallback
        | Some v when v >= lo && v <= hi -> Ok v
        | Some v -> Error [ field pointer $"must be an integer from {lo} to {hi}, not {v}" ]

    /// The source the request names, as this service reads it.
    let private source
        (svc: ServiceContext)
        (record: bool)
        (dto: Api.MonitorSourceDto option)
        : Task<Result<MonitorSource, Api.FieldError list>> = task {
        match dto with
        | None ->
            return
                Error [
                    field
                        "/source"
                        "is required: {\"type\": \"zmq\", \"host\": …} or {\"type\": \"replay\", \"upload_id\" | \"upload_ids\" | \"path\": …}"
                ]
        | Some s ->
            match s.Type with
            | "zmq" ->
                match s.Host with
                | None
                | Some "" -> return Error [ field "/source/host" "is required for a zmq source (the device's address)" ]
                | Some host ->
                    match Bridge.resolve host with
                    | Error e -> return Error [ field "/source/host" e ]
                    | Ok _ -> return Ok(MonitorSource.Bridge host)
            | "replay" ->
                let speed =
                    match s.Speed with
                    | None -> Ok 1.0
                    | Some x when Double.IsFinite x && x >= 0.0 && x <= 1000.0 -> Ok x
                    | Some x ->
                        Error [
                            field "/source/speed" $"must be 0 (as fast as possible) or a factor up to 1000, not {x}"
                        ]

                let input =
                    match s.UploadId, s.UploadIds, s.Path with
                    | Some id, None, None -> Ok(InputRef.Upload id)
                    | None, Some [], None -> Error [ field "/source/upload_ids" "must list at least one upload" ]
                    | None, Some ids, None when ids.Length > RunCreation.MaxUploadsPerInput ->
                        Error [
                            field
                                "/source/upload_ids"
                                $"at most {RunCreation.MaxUploadsPerInput} uploads ({ids.Length})"
                        ]
                    | None, Some ids, None -> Ok(InputRef.Uploads ids)
                    | None, None, Some path -> Ok(InputRef.Path path)
                    | _ -> Error [ field "/source" "give one of upload_id, upload_ids or path for a replay" ]

                let recordError =
                    if record then
                        [
                            field "/record" "records a live (zmq) source; a replayed log is stored already"
                        ]
                    else
                        []

                match speed, input with
                | Error e1, Error e2 -> return Error(e1 @ e2 @ recordError)
                | Error e, _
                | _, Error e -> return Error(e @ recordError)
                | Ok _, Ok _ when not recordError.IsEmpty -> return Error recordError
                | Ok speed, Ok input ->
                    match! RunInputs.resolve svc.Runs svc.Config.InputRoots input with
                    | Error reason -> return Error [ field "/source" reason ]
                    | Ok toolInput ->
                        match MonitorSession.replayFiles toolInput with
                        | Error e ->
                            return Error [ field "/source" (ServerPaths(svc.Config).Mask(ToolError.describe e)) ]
                        | Ok _ -> return Ok(MonitorSource.Replay(toolInput, speed))
            | null -> return Error [ field "/source/type" "is required (zmq or replay)" ]
            | other -> return Error [ field "/source/type" $"must be zmq or replay, not '{other}'" ]
    }

    /// Checks `request` and starts its session.
    let start
        (svc: ServiceContext)
        (sessions: MonitorSessions)
        (request: Api.MonitorStartRequest)
        : Task<Result<LiveSession, StartSessionError>> = task {
        match Option.ofObj request.MonitorId |> Option.map MonitorSession.find with
        | None -> return Error(StartSessionError.Invalid [ field "/monitor_id" "is required" ])
        | Some(Error e) -> return Error(StartSessionError.UnknownMonitor e)
        | Some(Ok monitor) ->
            let record = request.Record |> Option.defaultValue false

            let parameters =
                given request
                |> Result.bind (fun given ->
                    CtsLite.Monitors.Catalog.validate monitor given
                    |> Result.mapError RunCreation.parameterErrors)

            let updateMs = ranged "/update_ms" 10 60_000 DefaultUpdateMs request.UpdateMs

            let recordMaxMb =
                ranged "/record_max_mb" 1 100_000 DefaultRecordMaxMb request.RecordMaxMb

            let! source = source svc record request.Source

            let! files = task {
                match parameters with
                | Error _ -> return Ok(fun _ -> Error "unchecked")
                | Ok p ->
                    let! resolve =
                        RunInputs.fileResolver
                            svc.Runs
                            svc.Config.InputRoots
                            (RunInputs.fileValuesOf monitor.Descriptor p)

                    match ToolRunner.checkFiles resolve monitor.Descriptor p with
                    | [] -> return Ok resolve
                    | errors -> return Error(RunCreation.parameterErrors errors)
            }

            let errors = [
                match parameters with
                | Error e -> yield! e
                | Ok _ -> ()
                match files with
                | Error e -> yield! e
                | Ok _ -> ()
                match updateMs with
                | Error e -> yield! e
                | Ok _ -> ()
                match recordMaxMb with
                | Error e -> yield! e
                | Ok _ -> ()
                match source with
                | Error e -> yield! e
                | Ok _ -> ()
            ]

            match parameters, files, updateMs, recordMaxMb, source with
            | Ok parameters, Ok resolve, Ok updateMs, Ok recordMaxMb, Ok source when errors.IsEmpty ->
                let sourceDto =
                    match request.Source with
                    | Some s ->
                        match source with
                        | MonitorSource.Bridge _ -> {
                            s with
                                UploadId = None
                                UploadIds = None
                                Path = None
                                Speed = None
                          }
                        | MonitorSource.Replay(_, speed) -> {
                            s with
                                Host = None
                                Speed = Some speed
                          }
                    | None -> invalidOp "a source was checked"

                let now = svc.Time.GetUtcNow()

                let stored: SessionRecord = {
                    SessionId = Guid.NewGuid().ToString()
                    MonitorId = monitor.Descriptor.Id
                    ParamsJson = (Api.parameters parameters).GetRawText()
                    SourceJson = JsonSerializer.Serialize(sourceDto, ApiJson.options)
                    Record = record
                    UpdateMs = updateMs
                    Status = SessionStatus.Running
                    SourceStatus =
                        match source with
                        | MonitorSource.Replay _ -> "replaying"
                        | MonitorSource.Bridge _ -> "connecting"
                    CreatedAt = now
                    StoppedAt = None
                    Reason = None
                    Owner = sessions.Owner
                    Counts = SessionCounts.Zero
                    FinalJson = None
                    Recordings = []
                }

                let plan = {
                    Monitor = monitor
                    Parameters = parameters
                    ResolveFile = resolve
                    Source = source
                    RecordMaxBytes =
                        if record then
                            Some(int64 recordMaxMb * 1_000_000L)
                        else
                            None
                }

                // Retention counts an upload's age from its last use.
                for id in RunInputs.fileValuesOf monitor.Descriptor parameters do
                    let! upload = svc.Runs.GetUpload id

                    if upload.IsSome then
                        do! svc.Runs.TouchUpload(id, now)

                match! sessions.Start(stored, plan) with
                | Ok live -> return Ok live
                | Error(SessionStartRefusal.TooMany limit) -> return Error(StartSessionError.TooMany limit)
            | _ -> return Error(StartSessionError.Invalid errors)
    }

/// The handlers of monitor sessions.
[<RequireQualifiedAccess>]
module MonitorHandlers =

    let private service = Handlers.service

    let private sessions (ctx: HttpContext) =
        ctx.RequestServices.GetRequiredService<MonitorSessions>()

    let private element (json: string) : JsonElement =
        use doc = JsonDocument.Parse json
        doc.RootElement.Clone()

    /// A session as the API shows it: the stored record, with the live state when this process
    /// runs it.
    let response (stored: SessionRecord) (live: LiveSession option) (withSnapshot: bool) : Api.MonitorSession =
        let source =
            try
                JsonSerializer.Deserialize<Api.MonitorSourceDto>(stored.SourceJson, ApiJson.options)
            with :? JsonException -> {
                Type = "unknown"
                Host = None
                UploadId = None
                UploadIds = None
                Path = None
                Speed = None
            }

        let counts, clients, sourceStatus, latest, recordings =
            match live with
            | Some l when stored.Status = SessionStatus.Running ->
                l.Counts, l.Clients, l.SourceStatus, Some l.Latest, l.Recordings
            | _ -> stored.Counts, 0, stored.SourceStatus, stored.FinalJson, stored.Recordings

        {
            SessionId = stored.SessionId
            MonitorId = stored.MonitorId
            Status = SessionStatus.name stored.Status
            SourceStatus = sourceStatus
            Source = source
            Params = element stored.ParamsJson
            Record = stored.Record
            UpdateMs = stored.UpdateMs
            CreatedAt = stored.CreatedAt
            StoppedAt = stored.StoppedAt
            Reason = stored.Reason
            Counters = {
                Events = counts.Events
                Foreign = counts.Foreign
                Corrupt = counts.Corrupt
                Dropped = counts.Dropped
                Clients = clients
                Seq = counts.Seq
            }
            Recordings = recordings
            Snapshot = if withSnapshot then latest |> Option.map element else None
            StreamUrl = $"/v1/monitors/{stored.SessionId}/stream"
        }

    let private unprocessable = Handlers.unprocessable

    /// `POST /v1/monitors/start`: 201 with the session.
    let start: HttpHandler =
        bindJson<Api.MonitorStartRequest>(fun request ->
            fun (next: HttpFunc) (ctx: HttpContext) -> task {
                let svc = service ctx
                let sessions = sessions ctx

                match! SessionStart.start svc sessions request with
                | Ok live ->
                    ctx.Response.Headers.Location <- $"/v1/monitors/{live.SessionId}"

                    return!
                        (setStatusCode StatusCodes.Status201Created
                         >=> json (response live.Record (Some live) false))
                            next
                            ctx
                | Error(StartSessionError.UnknownMonitor detail) -> return! Problem.notFound detail next ctx
                | Error(StartSessionError.Invalid errors) -> return! unprocessable errors next ctx
                | Error(StartSessionError.TooMany limit) ->
                    return!
                        Auth.tooManyRequests
                            10
                            $"{limit} monitor sessions are running (max_monitors); stop one or retry later"
                            next
                            ctx
            })

    /// `GET /v1/monitors?status=&limit=`: sessions, newest first.
    let list: HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            let svc = service ctx
            let sessions = sessions ctx

            let status =
                Handlers.query ctx "status" |> Option.map (fun s -> s, SessionStatus.tryParse s)

            let limit = Handlers.limit ctx 100

            match status, limit with
            | Some(s, None), _ ->
                Problem.badRequest $"status '{s}' is not one of running, ended, stopped, failed" next ctx
            | _, Error e -> Problem.badRequest e next ctx
            | _, Ok limit -> task {
                let! stored = svc.Sessions.ListSessions(status |> Option.bind snd, limit)

                let body: Api.MonitorSessionList = {
                    Sessions = stored |> List.map (fun s -> response s (sessions.TryGet s.SessionId) false)
                }

                return! json body next ctx
              }

    let private withSession: RouteArgs -> (ServiceContext -> SessionRecord -> HttpHandler) -> HttpHandler =
        Handlers.withRecord "session_id" "monitor session" (fun svc id -> svc.Sessions.GetSession id)

    /// `GET /v1/monitors/{session_id}`: the session with its latest state.
    let get (args: RouteArgs) : HttpHandler =
        withSession args (fun _ stored ->
            fun next ctx -> json (response stored ((sessions ctx).TryGet stored.SessionId) true) next ctx)

    /// `POST /v1/monitors/{session_id}/stop`: stops the session and answers once everything it
    /// held is freed (its sockets, its thread, its recording closed and registered); a session
    /// that is over already is answered as it is.
    let stop (args: RouteArgs) : HttpHandler =
        withSession args (fun svc stored ->
            fun next ctx -> task {
                match (sessions ctx).TryGet stored.SessionId with
                | Some live ->
                    live.Stop "stopped on request"
                    let! _ = Task.WhenAny(live.Finished, Task.Delay(TimeSpan.FromSeconds 15.0))
                    let! now = svc.Sessions.GetSession stored.SessionId
                    let current = now |> Option.defaultValue stored
                    let live = if live.Finished.IsCompleted then None else Some live
                    return! json (response current live true) next ctx
                | None when stored.Status = SessionStatus.Running ->
                    return!
                        Problem.write
                            StatusCodes.Status409Conflict
                            $"monitor session {stored.SessionId} runs in another service process; stop it there"
                            []
                            next
                            ctx
                | None -> return! json (response stored None true) next ctx
            })

    /// What a stream sends when the watcher has heard nothing for this long.
    let private heartbeatEvery (svc: ServiceContext) = svc.Config.SseKeepalive

    /// Items of a session that is over: its final state as `snapshot`, then `end`.
    let private finalItems (stored: SessionRecord) : StreamItem list =
        let data = stored.FinalJson |> Option.defaultValue "{}"
        let t = float (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()) / 1000.0

        [
            {
                Kind = MonitorMessageKind.Snapshot
                Seq = stored.Counts.Seq
                T = t
                Data = data
            }
            {
                Kind = MonitorMessageKind.End
                Seq = stored.Counts.Seq
                T = t
                Data = data
            }
        ]

    /// Reads the watcher's items, with a heartbeat after `quiet` without one, until `end` (or
    /// the queue completes, or `aborted`), giving each to `send`.
    let private pump
        (initial: StreamItem list)
        (reader: Channels.ChannelReader<StreamItem>)
        (dropped: unit -> int64)
        (quiet: TimeSpan)
        (send: StreamItem -> int64 -> Task)
        (aborted: CancellationToken)
        : Task = task {
        let mutable go = true
        let mutable last = None

        for item in initial do
            if go then
                do! send item (dropped ())
                last <- Some item
                go <- item.Kind <> MonitorMessageKind.End

        while go && not aborted.IsCancellationRequested do
            use wait = CancellationTokenSource.CreateLinkedTokenSource aborted
            wait.CancelAfter quiet

            let! next = task {
                try
                    let! more = reader.WaitToReadAsync(wait.Token)
                    return Some more
                with :? OperationCanceledException when not aborted.IsCancellationRequested ->
                    return None
            }

            match next with
            | Some false -> go <- false
            | None ->
                match last with
                | Some item -> do! send (StreamItem.heartbeat item) (dropped ())
                | None -> ()
            | Some true ->
                let mutable item = Unchecked.defaultof<StreamItem>

                while go && reader.TryRead(&item) do
                    do! send item (dropped ())
                    last <- Some item

                    if item.Kind = MonitorMessageKind.End then
                        go <- false
    }

    /// A reader with nothing to read: a session that is over has only its initial items.
    let private nothingMore () =
        let channel = Channels.Channel.CreateUnbounded<StreamItem>()
        channel.Writer.Complete()
        channel.Reader

    /// `GET /v1/monitors/{session_id}/stream`: a WebSocket (JSON text messages), or Server-Sent
    /// Events (`event:` the type, `id:` the seq). First the latest state as `snapshot`, then
    /// `update`s at most every `update_ms`, `source_status` changes, `heartbeat`s when quiet, and
    /// `end` last. A watcher that reads too slowly loses its oldest messages (`dropped` counts them).
    let stream (args: RouteArgs) : HttpHandler =
        withSession args (fun svc stored ->
            fun (next: HttpFunc) (ctx: HttpContext) -> task {
                let live = (sessions ctx).TryGet stored.SessionId

                let source =
                    match live with
                    | Some l ->
                        match l.Watch 32 with
                        | Ok w -> Ok(w.Initial, w.Reader, (fun () -> w.Dropped), Some(l, w))
                        | Error(WatchRefusal.Full limit) -> Error limit
                    | None -> Ok(finalItems stored, nothingMore (), (fun () -> 0L), None)

                match source with
                | Error limit ->
                    return!
                        Auth.tooManyRequests
                            5
                            $"{limit} clients watch this session already (max_stream_clients)"
                            next
                            ctx
                | Ok _ when live.IsNone && stored.Status = SessionStatus.Running ->
                    return!
                        Problem.write
                            StatusCodes.Status409Conflict
                            $"monitor session {stored.SessionId} runs in another service process"
                            []
                            next
                            ctx
                | Ok(initial, reader, dropped, watching) ->
                    let aborted = ctx.RequestAborted

                    try
                        if ctx.WebSockets.IsWebSocketRequest then
                            use! socket = ctx.WebSockets.AcceptWebSocketAsync()
                            use gone = CancellationTokenSource.CreateLinkedTokenSource aborted

                            // The client's side: its close (or a dropped connection) ends the
                            // stream; anything else it sends is read and ignored. Never cancelled
                            // by us: a cancelled receive aborts the socket.
                            let receiving = task {
                                let buffer = Array.zeroCreate<byte> 1024

                                try
                                    let mutable go = true

                                    while go do
                                        let! r = socket.ReceiveAsync(ArraySegment buffer, aborted)

                                        if r.MessageType = WebSocketMessageType.Close then
                                            go <- false
                                with
                                | :? OperationCanceledException
                                | :? WebSocketException
                                | :? IO.IOException -> ()

                                gone.Cancel()
                            }

                            let send (item: StreamItem) (dropped: int64) : Task =
                                socket.SendAsync(
                                    ArraySegment(StreamItem.render item dropped),
                                    WebSocketMessageType.Text,
                                    true,
                                    gone.Token
                                )

                            try
                                do! pump initial reader dropped (heartbeatEvery svc) send gone.Token
                            with
                            | :? OperationCanceledException
                            | :? WebSocketException
                            | :? IO.IOException -> ()

                            try
                                // The close handshake: ours after `end`, or the answer to theirs.
                                match socket.State with
                                | WebSocketState.Open
                                | WebSocketState.CloseReceived ->
                                    use timeout = new CancellationTokenSource(TimeSpan.FromSeconds 5.0)

                                    do!
                                        socket.CloseOutputAsync(
                                            WebSocketCloseStatus.NormalClosure,
                                            "the session ended",
                                            timeout.Token
                                        )
                                | _ -> ()
                            with
                            | :? OperationCanceledException
                            | :? WebSocketException
                            | :? IO.IOException -> ()

                            let! _ = Task.WhenAny(receiving, Task.Delay(TimeSpan.FromSeconds 5.0))

                            if not receiving.IsCompleted then
                                socket.Abort()

                            do! receiving
                        else
                            ctx.Response.StatusCode <- 200
                            ctx.Response.ContentType <- "text/event-stream; charset=utf-8"
                            ctx.Response.Headers.CacheControl <- "no-cache"
                            ctx.Response.Headers["X-Accel-Buffering"] <- "no"
                            let body = ctx.Response.Body

                            let send (item: StreamItem) (dropped: int64) : Task = task {
                                let head =
                                    Encoding.UTF8.GetBytes
                                        $"id: {item.Seq}\nevent: {MonitorMessage.kindName item.Kind}\ndata: "

                                do! body.WriteAsync(head, aborted)
                                do! body.WriteAsync(StreamItem.render item dropped, aborted)
                                do! body.WriteAsync("\n\n"B, aborted)
                                do! body.FlushAsync aborted
                            }

                            try
                                do! pump initial reader dropped (heartbeatEvery svc) send aborted
                            with
                            | :? OperationCanceledException
                            | :? IO.IOException -> ()
                    finally
                        match watching with
                        | Some(l, w) -> l.Unwatch w
                        | None -> ()

                    return Some ctx
            })
