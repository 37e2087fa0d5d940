namespace CtsLite.Server

open System
open CtsLite
open System.IO
open System.Security.Cryptography
open System.Text
open System.Text.Json
open System.Threading.Tasks
open Microsoft.AspNetCore.Http
open Microsoft.Extensions.DependencyInjection
open Microsoft.Net.Http.Headers
open CtsLite.Tools
open CtsLite.Server.Http

/// One followed run as its streams see it: the run and every log line so far.
type private FeedEntry() =
    member val Run: RunRecord option = None with get, set
    member val Lines = ResizeArray<LogRecord>()
    member val Taken = 0L with get, set
    member val Used = 0L with get, set
    member val Refreshing: Task = Task.CompletedTask with get, set

/// What every log stream of a run reads: the run and its log lines, fetched from the store by
/// one poll per run at most every `interval`, however many streams follow it (one per service,
/// a DI singleton). Runs nobody has read for a minute are dropped.
[<Sealed>]
type RunFeed(runs: IRunStore, time: TimeProvider, interval: TimeSpan) =
    let entries = Collections.Concurrent.ConcurrentDictionary<string, FeedEntry>()

    let refresh (runId: string) (entry: FeedEntry) : Task = task {
        // Swept here, once per run per interval, rather than on every stream's every read.
        for KeyValue(id, e) in entries do
            if time.GetElapsedTime(e.Used) > TimeSpan.FromMinutes 1.0 then
                entries.TryRemove id |> ignore

        // The run first: when it is terminal, the lines read after it include its last ones.
        let! run = runs.GetRun runId

        let after =
            lock entry (fun () ->
                if entry.Lines.Count = 0 then
                    0L
                else
                    entry.Lines[entry.Lines.Count - 1].Seq)

        let! lines = runs.GetLogs(runId, after)

        lock entry (fun () ->
            entry.Run <- run
            entry.Lines.AddRange lines
            entry.Taken <- time.GetTimestamp())
    }

    /// The run (None once it is gone) and its lines after `afterSeq`, at most `interval` old.
    member _.Read(runId: string, afterSeq: int64) : Task<RunRecord option * LogRecord list> = task {
        let now = time.GetTimestamp()
        let entry = entries.GetOrAdd(runId, fun _ -> FeedEntry())

        let pending =
            lock entry (fun () ->
                entry.Used <- now

                if
                    entry.Refreshing.IsCompleted
                    && (entry.Taken = 0L || time.GetElapsedTime(entry.Taken) >= interval)
                then
                    entry.Refreshing <- refresh runId entry

                entry.Refreshing)

        do! pending

        return
            lock entry (fun () ->
                entry.Run,
                [
                    for l in entry.Lines do
                        if l.Seq > afterSeq then
                            l
                ])
    }

    /// Runs followed now (for tests and health).
    member _.Followed = entries.Count

/// The handlers of runs, their logs and artifacts.
[<RequireQualifiedAccess>]
module RunHandlers =

    let private service = Handlers.service

    let private engine (ctx: HttpContext) =
        ctx.RequestServices.GetRequiredService<IRunEngine>()

    let private response (svc: ServiceContext) (run: RunRecord) : Task<Api.RunResponse> = task {
        let! artifacts =
            if run.Status = RunStatus.Completed then
                svc.Runs.ListArtifacts(Some run.RunId)
            else
                Task.FromResult []

        return ApiRecords.run run (artifacts |> List.map _.ArtifactId)
    }

    /// `json` of a run's response.
    let private runJson (svc: ServiceContext) (run: RunRecord) : HttpHandler =
        fun next ctx -> task {
            let! body = response svc run
            return! json body next ctx
        }

    let private unprocessable = Handlers.unprocessable

    /// `POST /v1/runs`: the run-creation use case (`RunCreation.create`) answered in HTTP.
    let create: HttpHandler =
        bindJson<Api.RunRequest>(fun request ->
            fun (next: HttpFunc) (ctx: HttpContext) ->
                let svc = service ctx

                let key =
                    match ctx.Request.Headers["Idempotency-Key"].ToString() with
                    | "" -> None
                    | key -> Some key

                let accepted (run: RunRecord) =
                    ctx.Response.Headers.Location <- $"/v1/runs/{run.RunId}"
                    setStatusCode StatusCodes.Status202Accepted >=> runJson svc run

                task {
                    let! created = RunCreation.create svc (engine ctx) request key

                    let answer =
                        match created with
                        | Ok(CreateRunOutcome.Created run)
                        | Ok(CreateRunOutcome.Existing run) -> accepted run
                        | Error(CreateRunError.Invalid errors) -> unprocessable errors
                        | Error(CreateRunError.UnknownTool detail) -> Problem.notFound detail
                        | Error(CreateRunError.BadInput detail) -> Problem.badRequest detail
                        | Error(CreateRunError.QueueFull limit) ->
                            Auth.tooManyRequests
                                10
                                $"the run queue is full ({limit} runs waiting, max_queued_runs); retry later"
                        | Error CreateRunError.IdempotencyConflict ->
                            Problem.write
                                StatusCodes.Status409Conflict
                                "this Idempotency-Key was used with a different request body"
                                []

                    return! answer next ctx
                })

    let private withRun: RouteArgs -> (ServiceContext -> RunRecord -> HttpHandler) -> HttpHandler =
        Handlers.withRecord "run_id" "run" (fun svc id -> svc.Runs.GetRun id)

    /// `GET /v1/runs/{run_id}`.
    let get (args: RouteArgs) : HttpHandler = withRun args runJson

    /// The bytes after which a listing page ends (and gives a cursor), whatever its `limit`.
    [<Literal>]
    let MaxListBytes = 4 * 1024 * 1024

    /// `GET /v1/runs?status=&tool_id=&cursor=&limit=`.
    let list: HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            let svc = service ctx

            let q = Handlers.query ctx
            let status = q "status" |> Option.map (fun s -> s, RunStatus.tryParse s)
            let limit = Handlers.limit ctx 50

            match status, limit with
            | Some(s, None), _ ->
                Problem.badRequest $"status '{s}' is not one of queued, running, completed, failed, canceled" next ctx
            | _, Error e -> Problem.badRequest e next ctx
            | _, Ok limit -> task {
                let! runs, cursor =
                    svc.Runs.ListRuns(status |> Option.bind snd, q "tool_id", q "cursor", limit)

                let responses = ResizeArray<Api.RunResponse>()
                // A page is bounded in bytes as well as rows: once it holds about MaxListBytes, it
                // ends there and its cursor continues after the last run it holds.
                let mutable bytes = 0
                let mutable cursor = cursor
                let mutable remaining = runs
                let mutable last = None

                while not remaining.IsEmpty do
                    let run = remaining.Head
                    bytes <- bytes + RunRecord.approximateJsonBytes run

                    match last with
                    | Some previous when bytes > MaxListBytes ->
                        cursor <- Some(RunRecord.cursorAfter previous)
                        remaining <- []
                    | _ ->
                        let! r = response svc run
                        responses.Add r
                        last <- Some run
                        remaining <- remaining.Tail

                return!
                    json
                        ({
                            Runs = List.ofSeq responses
                            NextCursor = cursor
                        }
                        : Api.RunList)
                        next
                        ctx
              }

    /// `POST /v1/runs/{run_id}/cancel` and `DELETE /v1/runs/{run_id}`.
    let cancel (args: RouteArgs) : HttpHandler =
        withRun args (fun svc run ->
            if RunStatus.isTerminal run.Status then
                Problem.write
                    StatusCodes.Status409Conflict
                    $"run {run.RunId} already ended ({RunStatus.name run.Status})"
                    []
            else
                fun next ctx -> task {
                    match! svc.Runs.RequestCancel(run.RunId, svc.Time.GetUtcNow()) with
                    | None -> return! Problem.notFound $"no run '{run.RunId}'" next ctx
                    | Some updated ->
                        (engine ctx).Cancel run.RunId
                        return! (setStatusCode StatusCodes.Status202Accepted >=> runJson svc updated) next ctx
                })

    let private entry (l: LogRecord) : Api.LogEntry = {
        Seq = l.Seq
        Timestamp = l.Timestamp
        Level = l.Level
        Message = l.Message
        Source = l.Source
    }

    /// `GET /v1/runs/{run_id}/logs?format=json`: every log line so far.
    let logsJson (args: RouteArgs) : HttpHandler =
        withRun args (fun svc run ->
            fun next ctx -> task {
                let! logs = svc.Runs.GetLogs(run.RunId, 0L)

                return!
                    json
                        ({
                            RunId = run.RunId
                            Entries = logs |> List.map entry
                        }
                        : Api.LogList)
                        next
                        ctx
            })

    /// The artifacts of one run, or of every run.
    let private artifactList (svc: ServiceContext) (runId: string option) : HttpHandler =
        fun next ctx -> task {
            let! artifacts = svc.Runs.ListArtifacts runId

            return!
                json
                    ({
                        Artifacts = artifacts |> List.map ApiRecords.artifact
                    }
                    : Api.ArtifactList)
                    next
                    ctx
        }

    /// `GET /v1/runs/{run_id}/artifacts`.
    let runArtifacts (args: RouteArgs) : HttpHandler =
        withRun args (fun svc run -> artifactList svc (Some run.RunId))

    /// `GET /v1/artifacts?run_id=`.
    let artifacts: HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            let svc = service ctx

            let runId =
                ctx.Request.Query["run_id"].ToString()
                |> Option.ofObj
                |> Option.filter ((<>) "")

            artifactList svc runId next ctx

    let private withArtifact (args: RouteArgs) (f: ArtifactRecord -> HttpHandler) : HttpHandler =
        Handlers.withRecord "artifact_id" "artifact" (fun svc id -> svc.Runs.GetArtifact id) args (fun _ a -> f a)

    /// `GET /v1/artifacts/{artifact_id}`.
    let artifact (args: RouteArgs) : HttpHandler =
        withArtifact args (fun a -> json (ApiRecords.artifact a))

    /// What an artifact may do when a browser opens it: an artifact is content a tool wrote from
    /// a log, served from the service's origin (where the web UI keeps its token), so it runs
    /// sandboxed — its own inline styles and script (the HTML report), nothing fetched, no
    /// same-origin access.
    [<Literal>]
    let ArtifactPolicy =
        "sandbox allow-scripts; default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

    /// `GET /v1/artifacts/{artifact_id}/download`: the file, with `Content-Disposition`, a strong
    /// `ETag` (its sha256), conditional requests and byte ranges (206). An HTML artifact (the
    /// report) opens in the browser (`inline`) unless `?download=1`; every artifact is sent with
    /// `Content-Security-Policy` (`ArtifactPolicy`) and `X-Content-Type-Options: nosniff`.
    let download (args: RouteArgs) : HttpHandler =
        withArtifact args (fun a ->
            fun (next: HttpFunc) (ctx: HttpContext) -> task {
                if not (File.Exists a.Path) then
                    return!
                        Problem.write
                            StatusCodes.Status410Gone
                            $"the file of artifact {a.ArtifactId} is gone (retention)"
                            []
                            next
                            ctx
                else
                    ctx.Response.Headers["Content-Security-Policy"] <- ArtifactPolicy
                    ctx.Response.Headers["X-Content-Type-Options"] <- "nosniff"

                    let inline' =
                        a.ContentType.StartsWith("text/html", StringComparison.OrdinalIgnoreCase)
                        && ctx.Request.Query["download"].ToString() <> "1"

                    if inline' then
                        let disposition = ContentDispositionHeaderValue("inline")
                        disposition.SetHttpFileName a.Filename
                        ctx.Response.Headers.ContentDisposition <- disposition.ToString()

                    let result =
                        Results.File(
                            a.Path,
                            a.ContentType,
                            (if inline' then null else a.Filename),
                            Nullable(),
                            EntityTagHeaderValue($"\"{a.Sha256}\""),
                            true
                        )

                    do! result.ExecuteAsync ctx
                    return Some ctx
            })

    /// `GET /v1/runs/{run_id}/logs`: Server-Sent Events. History first, then live: `log` events
    /// (id = the line's seq), `status` events when the run's state or progress changes, and a final
    /// `end` event once the run is terminal, after which the stream ends. `Last-Event-ID` (or
    /// `?last_event_id=`) resumes after that line, without duplicates or gaps.
    /// `?format=json` answers the plain list instead.
    let logs (args: RouteArgs) : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            if ctx.Request.Query["format"].ToString() = "json" then
                logsJson args next ctx
            else
                withRun
                    args
                    (fun svc run ->
                        fun (_: HttpFunc) (ctx: HttpContext) -> task {
                            let caller = Auth.callerOf ctx

                            match svc.Streams.TryEnter caller with
                            | Error SlotRefusal.CallerFull ->
                                return!
                                    Auth.tooManyRequests
                                        5
                                        $"you already follow {svc.Streams.PerCaller} log stream(s) (max_sse_streams_per_caller)"
                                        earlyReturn
                                        ctx
                            | Error SlotRefusal.AllFull ->
                                return!
                                    Auth.tooManyRequests
                                        5
                                        $"{svc.Streams.Limit} log streams are open (max_sse_streams); retry later"
                                        earlyReturn
                                        ctx
                            | Ok() ->
                                try
                                    let options = Json.optionsOf ctx
                                    let aborted = ctx.RequestAborted

                                    let resumeFrom =
                                        let header = ctx.Request.Headers["Last-Event-ID"].ToString()

                                        let value =
                                            if header <> "" then
                                                header
                                            else
                                                ctx.Request.Query["last_event_id"].ToString()

                                        match Int64.TryParse value with
                                        | true, n when n >= 0L -> n
                                        | _ -> 0L

                                    ctx.Response.StatusCode <- 200
                                    ctx.Response.ContentType <- "text/event-stream; charset=utf-8"
                                    ctx.Response.Headers.CacheControl <- "no-cache"
                                    ctx.Response.Headers["X-Accel-Buffering"] <- "no"
                                    let body = ctx.Response.Body
                                    let mutable lastSeq = resumeFrom
                                    let mutable lastStatus = ""
                                    let mutable lastWrite = DateTimeOffset.UtcNow
                                    let mutable finished = false

                                    let send (id: int64) (event: string) (data: byte array) = task {
                                        let head = Encoding.UTF8.GetBytes $"id: {id}\nevent: {event}\ndata: "
                                        do! body.WriteAsync(head, aborted)
                                        do! body.WriteAsync(data, aborted)
                                        do! body.WriteAsync(Encoding.UTF8.GetBytes "\n\n", aborted)
                                        lastWrite <- DateTimeOffset.UtcNow
                                    }

                                    let feed = ctx.RequestServices.GetRequiredService<RunFeed>()

                                    try
                                        while not finished && not aborted.IsCancellationRequested do
                                            let! current, lines = feed.Read(run.RunId, lastSeq)

                                            for l in lines do
                                                do!
                                                    send
                                                        l.Seq
                                                        "log"
                                                        (JsonSerializer.SerializeToUtf8Bytes(entry l, options))

                                                lastSeq <- l.Seq

                                            match current with
                                            | None -> finished <- true
                                            | Some current ->
                                                let state = $"{RunStatus.name current.Status}:{current.Progress}"

                                                if RunStatus.isTerminal current.Status then
                                                    let! final = response svc current
                                                    let final = JsonSerializer.SerializeToUtf8Bytes(final, options)

                                                    do! send lastSeq "end" final
                                                    finished <- true
                                                elif state <> lastStatus then
                                                    lastStatus <- state
                                                    let! body = response svc current

                                                    do!
                                                        send
                                                            lastSeq
                                                            "status"
                                                            (JsonSerializer.SerializeToUtf8Bytes(body, options))

                                            if not finished then
                                                if DateTimeOffset.UtcNow - lastWrite >= svc.Config.SseKeepalive then
                                                    do!
                                                        body.WriteAsync(
                                                            Encoding.UTF8.GetBytes ": keepalive\n\n",
                                                            aborted
                                                        )

                                                    lastWrite <- DateTimeOffset.UtcNow

                                                do! body.FlushAsync aborted
                                                do! Task.Delay(200, aborted)

                                        do! body.FlushAsync aborted
                                    with :? OperationCanceledException when aborted.IsCancellationRequested ->
                                        ()

                                    return Some ctx
                                finally
                                    svc.Streams.Exit caller
                        })
                    next
                    ctx
