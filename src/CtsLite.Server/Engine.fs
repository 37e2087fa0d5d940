namespace CtsLite.Server

open System
open System.Collections.Concurrent
open System.Collections.Generic
open System.IO
open System.Security.Cryptography
open System.Text.Json
open System.Runtime.ExceptionServices
open System.Threading
open System.Threading.Channels
open System.Threading.Tasks
open Microsoft.Extensions.Hosting
open Microsoft.Extensions.Logging
open CtsLite.Tools

/// What the handlers ask of the execution engine.
type IRunEngine =
    /// A run was queued: wake an idle worker.
    abstract Notify: unit -> unit
    /// Stops a run executing in this process now (the store's flag reaches other processes).
    abstract Cancel: runId: string -> unit

/// Turning stored parameters back into tool input.
[<RequireQualifiedAccess>]
module RunParameters =

    /// A JSON value as a parameter input.
    let rec ofJson (e: JsonElement) : ParameterInput =
        match e.ValueKind with
        | JsonValueKind.String -> ParameterInput.Text(e.GetString())
        | JsonValueKind.Number -> ParameterInput.Number(e.GetDouble())
        | JsonValueKind.True -> ParameterInput.Flag true
        | JsonValueKind.False -> ParameterInput.Flag false
        | JsonValueKind.Array -> ParameterInput.Items [ for x in e.EnumerateArray() -> ofJson x ]
        | JsonValueKind.Null -> ParameterInput.Null
        | _ -> ParameterInput.Text(e.GetRawText())

    /// The members of a JSON object as parameter inputs.
    let ofObject (e: JsonElement) : (string * ParameterInput) list = [
        for p in e.EnumerateObject() -> p.Name, ofJson p.Value
    ]

/// Executes queued runs: `MaxConcurrentRuns` workers claim runs from the store in FIFO order,
/// hold them through a renewed lease, run the tool in process with a cancellation that really
/// stops it (request, timeout or shutdown), and record log lines, progress and artifacts. The tool
/// runs on its own thread and never waits for the store: its log lines go through a channel to a
/// writer, and its progress is written by the lease loop.
[<Sealed>]
type RunEngine
    (
        config: ServiceConfig,
        runs: IRunStore,
        time: TimeProvider,
        logger: ILogger<RunEngine>,
        fileResolver: string list -> Task<string -> Result<string, string>>
    ) =
    inherit BackgroundService()

    let owner = $"{Environment.MachineName}:{Environment.ProcessId}:{Guid.NewGuid():N}"
    let wake = new SemaphoreSlim(0)
    let paths = ServerPaths config
    let active = ConcurrentDictionary<string, CancellationTokenSource>()

    /// How long a claim lasts without renewal; renewed every third of it.
    static member LeaseDuration = TimeSpan.FromSeconds 30.0

    member val PollInterval = TimeSpan.FromSeconds 1.0 with get, set

    /// How often a running run's lease is renewed, its progress written and its cancel flag read.
    member val RenewInterval = TimeSpan.FromSeconds 1.0 with get, set

    /// How long a cancelled or timed-out tool has to stop before the run ends without it.
    member val StopGrace = ToolRunner.StopGrace with get, set

    interface IRunEngine with
        member _.Notify() = wake.Release() |> ignore

        member _.Cancel(runId: string) =
            match active.TryGetValue runId with
            | true, cts ->
                // The run may finish (and dispose its source) between the lookup and the cancel.
                try
                    cts.Cancel()
                with :? ObjectDisposedException ->
                    ()
            | false, _ -> ()

    /// Records one log line; a store failure is logged, never thrown at the run.
    member private _.Append (runId: string) (level: string) (source: string) (message: string) : Task = task {
        try
            let! _ = runs.AppendLog(runId, level, message, source, time.GetUtcNow())
            ()
        with e ->
            logger.LogError(e, "could not record a log line of run {RunId}", runId)
    }

    /// Fills `names` with each upload's file path and the name it is shown by: its file name, or
    /// with the upload's short id when two uploads of the run share a name. An upload sent
    /// without a name is left to ServerPaths (`upload <id>`).
    member private _.NameUploads (names: Dictionary<string, string>) (values: string list) : Task = task {
        let found = ResizeArray<UploadRecord>()

        for value in List.distinct values do
            match! runs.GetUpload value with
            // "upload" is the name of an upload sent without one: shown by its id instead.
            | Some upload when upload.Filename <> "upload" -> found.Add upload
            | Some _
            | None -> ()

        let counts = found |> Seq.countBy _.Filename |> dict

        for u in found do
            names[u.Path] <-
                if counts[u.Filename] > 1 then
                    $"{u.Filename} (upload {u.UploadId.Substring(0, 8)})"
                else
                    u.Filename
    }

    member private this.Execute (run: RunRecord) (stopping: CancellationToken) : Task = task {
        let runDir = Path.Combine(config.DataDir, "runs", run.RunId)
        let outDir = Path.Combine(runDir, "artifacts")

        // What a client reads of a run (its error, its log, its report) never shows a path of
        // this machine: the run's uploads go by the names the user gave them, other paths as
        // ServerPaths shows them. Filled once the input is resolved.
        let names = Dictionary<string, string>()

        let show (path: string) =
            match names.TryGetValue path with
            | true, name -> name
            | false, _ -> paths.Show path

        let mask (text: string) =
            if isNull text || names.Count = 0 then
                paths.Mask text
            else
                names
                |> Seq.fold (fun (t: string) kv -> t.Replace(kv.Key, kv.Value)) text
                |> paths.Mask

        let finish status (reason: string option) = task {
            let! _ =
                runs.Finish(run.RunId, owner, status, reason |> Option.map mask, time.GetUtcNow())

            ()
        }

        let given =
            use doc = JsonDocument.Parse run.ParamsJson
            RunParameters.ofObject doc.RootElement

        match ToolRunner.prepare run.ToolId given with
        | _ when run.Attempts > config.MaxAttempts ->
            // Claimed again and again without an end on record: its worker keeps dying, or the
            // store could not record how it ended. Stop here instead of looping for ever.
            do!
                finish
                    RunStatus.Failed
                    (Some $"gave up after {config.MaxAttempts} attempts: the run never ended on record (max_attempts)")
        | Error(ToolError.UnknownTool _) -> do! finish RunStatus.Failed (Some $"no tool '{run.ToolId}' in this build")
        | Error e -> do! finish RunStatus.Failed (Some $"invalid parameters: {ToolError.describe e}")
        | Ok prepared ->
            // A run claimed again after its worker died starts from an empty folder.
            if Directory.Exists outDir then
                Directory.Delete(outDir, true)

            use runCts = CancellationTokenSource.CreateLinkedTokenSource stopping
            active[run.RunId] <- runCts

            // Log lines in order, tool and engine alike, written by one writer.
            let lines =
                Channel.CreateUnbounded<string * string * string>(UnboundedChannelOptions(SingleReader = true))

            let log (level: string) (source: string) (message: string) =
                lines.Writer.TryWrite((level, source, mask message)) |> ignore

            let writer = task {
                let mutable more = true

                while more do
                    let! ready = lines.Reader.WaitToReadAsync()

                    if ready then
                        let mutable line = Unchecked.defaultof<_>

                        while lines.Reader.TryRead(&line) do
                            let level, source, message = line
                            do! this.Append run.RunId level source message
                    else
                        more <- false
            }

            // The latest progress, written by the lease loop (at most once a tick).
            let mutable progress = 0.0
            let mutable written = 0.0
            use loopStop = new CancellationTokenSource()

            // Renews the lease, writes progress and watches the store's cancel flag (set by any
            // process). Awaited before the run's token source is disposed.
            let lease = task {
                use timer = new PeriodicTimer(this.RenewInterval, time)

                try
                    while! timer.WaitForNextTickAsync loopStop.Token do
                        try
                            let! held =
                                runs.RenewLease(run.RunId, owner, time.GetUtcNow() + RunEngine.LeaseDuration)

                            if not held then
                                runCts.Cancel()
                            else
                                let! current = runs.GetRun run.RunId

                                if current |> Option.exists _.CancelRequested then
                                    runCts.Cancel()

                                let p = Volatile.Read &progress

                                if p <> written then
                                    written <- p
                                    do! runs.SetProgress(run.RunId, owner, Math.Round(p, 1))
                        with e ->
                            logger.LogWarning(e, "lease renewal of run {RunId} failed", run.RunId)
                with :? OperationCanceledException ->
                    ()
            }

            let! failure = task {
                try
                    match! RunInputs.resolve runs config.InputRoots run.Input with
                    | Error reason ->
                        log "error" "engine" $"input: {reason}"
                        lines.Writer.Complete()
                        do! writer
                        do! finish RunStatus.Failed (Some $"input: {reason}")
                    | Ok input ->
                        do! this.NameUploads names (RunInputs.uploadIds run.Input @ RunInputs.fileValues prepared)
                        log "info" "engine" $"started {run.ToolId} (worker {owner})"
                        let! resolveFile = fileResolver (RunInputs.fileValues prepared)

                        let request: ToolRunRequest = {
                            ToolId = run.ToolId
                            Input = input
                            Parameters = given
                            OutputDir = outDir
                            Progress = fun pct -> Volatile.Write(&progress, pct)
                            Log =
                                fun level line ->
                                    match level with
                                    | ToolLogLevel.Debug -> ()
                                    | _ -> log ((string level).ToLowerInvariant()) "tool" line
                            Cancellation = runCts.Token
                            Timeout = Some config.RunTimeout
                            ResolveFile = resolveFile
                            ShowPath = show
                        }

                        // The tool runs on its own thread; one blocked in a read that cancellation
                        // cannot reach is left after StopGrace and the run ends all the same.
                        let! result = ToolRunner.executeAsync this.StopGrace request prepared

                        let ended (level: string) (message: string) = task {
                            log level "engine" message
                            lines.Writer.Complete()
                            do! writer
                        }

                        match result with
                        | Ok result ->
                            let now = time.GetUtcNow()

                            do!
                                runs.AddArtifacts [
                                    for a in result.Artifacts ->
                                        {
                                            ArtifactId = Guid.NewGuid().ToString()
                                            RunId = run.RunId
                                            Filename = a.Name
                                            ContentType = a.ContentType
                                            Size = a.Size
                                            Sha256 = a.Sha256
                                            Path = a.Path
                                            CreatedAt = now
                                        }
                                ]

                            do! ended "info" $"completed: {result.Output.Summary}"
                            do! finish RunStatus.Completed None
                        | Error ToolError.Canceled when stopping.IsCancellationRequested ->
                            // Shutting down: the run goes back to the queue for the next start.
                            do! ended "warning" "service stopping: the run is queued again"
                            do! runs.Requeue(run.RunId, owner)
                        | Error ToolError.Canceled ->
                            let! current = runs.GetRun run.RunId

                            if current |> Option.exists _.CancelRequested then
                                do! ended "warning" "canceled on request"
                                do! finish RunStatus.Canceled (Some "canceled on request")
                            else
                                // Canceled by the lease check: another worker owns the run now.
                                do! ended "warning" "the lease was lost: another worker has the run"
                        | Error e ->
                            let reason = ToolError.describe e
                            do! ended "error" (if e.IsTimedOut then reason else $"failed: {reason}")
                            do! finish RunStatus.Failed (Some reason)

                    return None
                with e ->
                    return Some(ExceptionDispatchInfo.Capture e)
            }

            active.TryRemove run.RunId |> ignore
            lines.Writer.TryComplete() |> ignore
            loopStop.Cancel()
            // The lease loop has ended and the writer drained before the sources are disposed.
            do! lease
            do! writer
            failure |> Option.iter _.Throw()
    }

    member private this.Worker(stopping: CancellationToken) : Task = task {
        // While the store fails, the claim loop backs off (1 s doubling to a minute) and the
        // condition is logged once per ten minutes, not once a poll.
        let mutable backoff = TimeSpan.Zero
        let mutable lastLogged = None

        while not stopping.IsCancellationRequested do
            let! claimed = task {
                try
                    let now = time.GetUtcNow()
                    let! run = runs.ClaimNext(owner, now, now + RunEngine.LeaseDuration)

                    if backoff > TimeSpan.Zero then
                        logger.LogInformation("The store answers again: claiming runs")

                    backoff <- TimeSpan.Zero
                    lastLogged <- None
                    return run
                with
                | :? OperationCanceledException -> return None
                | e ->
                    let now = time.GetUtcNow()

                    match lastLogged with
                    | Some(at: DateTimeOffset) when now - at < TimeSpan.FromMinutes 10.0 -> ()
                    | _ ->
                        logger.LogError(e, "Claiming a run failed; retrying with back-off (logged once per 10 minutes)")
                        lastLogged <- Some now

                    backoff <-
                        if backoff = TimeSpan.Zero then
                            TimeSpan.FromSeconds 1.0
                        else
                            TimeSpan.FromTicks(min (backoff.Ticks * 2L) (TimeSpan.FromMinutes 1.0).Ticks)

                    try
                        do! Task.Delay(backoff, time, stopping)
                    with :? OperationCanceledException ->
                        ()

                    return None
            }

            match claimed with
            | Some run ->
                try
                    do! this.Execute run stopping
                with e ->
                    logger.LogError(e, "run {RunId} failed with an unexpected error", run.RunId)

                    try
                        do! this.Append run.RunId "error" "engine" "internal error (see the service log)"

                        let! _ =
                            runs.Finish(run.RunId, owner, RunStatus.Failed, Some "internal error", time.GetUtcNow())

                        ()
                    with _ ->
                        ()
            | None ->
                try
                    let! _ = wake.WaitAsync(this.PollInterval, stopping)
                    ()
                with :? OperationCanceledException ->
                    ()
    }

    override this.ExecuteAsync(stopping: CancellationToken) : Task =
        let workers = [| for _ in 1 .. config.MaxConcurrentRuns -> this.Worker stopping |]
        Task.WhenAll workers
