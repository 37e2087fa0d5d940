namespace CtsLite.Server

open System
open System.Collections.Concurrent
open System.IO
open System.Security.Cryptography
open System.Text.Json
open System.Threading
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
/// stops it (request, timeout or shutdown), and record log lines, progress and artifacts.
[<Sealed>]
type RunEngine
    (
        config: ServiceConfig,
        runs: IRunStore,
        time: TimeProvider,
        logger: ILogger<RunEngine>,
        resolveFile: string -> Result<string, string>
    ) =
    inherit BackgroundService()

    let owner = $"{Environment.MachineName}:{Environment.ProcessId}:{Guid.NewGuid():N}"
    let wake = new SemaphoreSlim(0)
    let active = ConcurrentDictionary<string, CancellationTokenSource>()

    /// How long a claim lasts without renewal; renewed every third of it.
    static member LeaseDuration = TimeSpan.FromSeconds 30.0

    member val PollInterval = TimeSpan.FromSeconds 1.0 with get, set

    /// How often a running run's lease is renewed and its cancel flag read.
    member val RenewInterval = TimeSpan.FromSeconds 1.0 with get, set

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

    member private _.Log (runId: string) (level: string) (source: string) (message: string) =
        try
            runs.AppendLog(runId, level, message, source, time.GetUtcNow()) |> ignore
        with e ->
            logger.LogError(e, "could not record a log line of run {RunId}", runId)

    member private this.Execute (run: RunRecord) (stopping: CancellationToken) : unit =
        let log = this.Log run.RunId
        let runDir = Path.Combine(config.DataDir, "runs", run.RunId)
        let outDir = Path.Combine(runDir, "artifacts")

        let finish status reason =
            runs.Finish(run.RunId, owner, status, reason, time.GetUtcNow()) |> ignore

        let given =
            use doc = JsonDocument.Parse run.ParamsJson
            RunParameters.ofObject doc.RootElement

        match ToolRunner.prepare run.ToolId given with
        | Error(ToolError.UnknownTool _) -> finish RunStatus.Failed (Some $"no tool '{run.ToolId}' in this build")
        | Error e -> finish RunStatus.Failed (Some $"invalid parameters: {ToolError.describe e}")
        | Ok prepared ->
            // A run claimed again after its worker died starts from an empty folder.
            if Directory.Exists outDir then
                Directory.Delete(outDir, true)

            use runCts = CancellationTokenSource.CreateLinkedTokenSource stopping
            active[run.RunId] <- runCts
            let mutable lastProgress = -1.0
            let mutable lastProgressAt = DateTimeOffset.MinValue

            let input = RunInputs.resolve runs config.InputRoots run.Input

            // Renews the lease and watches the store's cancel flag (set by any process). Disposed
            // below only once no callback is running, so none can touch the disposed source.
            let renew =
                new Timer(
                    (fun _ ->
                        try
                            if not (runs.RenewLease(run.RunId, owner, time.GetUtcNow() + RunEngine.LeaseDuration)) then
                                runCts.Cancel()
                            elif (runs.GetRun run.RunId |> Option.exists _.CancelRequested) then
                                runCts.Cancel()
                        with e ->
                            logger.LogWarning(e, "lease renewal of run {RunId} failed", run.RunId)),
                    null,
                    this.RenewInterval,
                    this.RenewInterval
                )

            try
                match input with
                | Error reason ->
                    log "error" "engine" $"input: {reason}"
                    finish RunStatus.Failed (Some $"input: {reason}")
                | Ok input ->
                    log "info" "engine" $"started {run.ToolId} (worker {owner})"

                    let request: ToolRunRequest = {
                        ToolId = run.ToolId
                        Input = input
                        Parameters = given
                        OutputDir = outDir
                        Progress =
                            fun pct ->
                                let now = time.GetUtcNow()

                                if pct - lastProgress >= 1.0 || now - lastProgressAt > TimeSpan.FromSeconds 1.0 then
                                    lastProgress <- pct
                                    lastProgressAt <- now
                                    runs.SetProgress(run.RunId, owner, Math.Round(pct, 1))
                        Log =
                            fun level line ->
                                match level with
                                | ToolLogLevel.Debug -> ()
                                | _ -> log ((string level).ToLowerInvariant()) "tool" line
                        Cancellation = runCts.Token
                        Timeout = Some config.RunTimeout
                        ResolveFile = resolveFile
                    }

                    match ToolRunner.execute request prepared with
                    | Ok result ->
                        let now = time.GetUtcNow()

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

                        log "info" "engine" $"completed: {result.Output.Summary}"
                        finish RunStatus.Completed None
                    | Error ToolError.Canceled when stopping.IsCancellationRequested ->
                        // Shutting down: the run goes back to the queue for the next start.
                        log "warning" "engine" "service stopping: the run is queued again"
                        runs.Requeue(run.RunId, owner)
                    | Error ToolError.Canceled when runs.GetRun run.RunId |> Option.exists _.CancelRequested ->
                        log "warning" "engine" "canceled on request"
                        finish RunStatus.Canceled (Some "canceled on request")
                    | Error ToolError.Canceled ->
                        // Canceled by the lease check: another worker owns the run now.
                        log "warning" "engine" "the lease was lost: another worker has the run"
                    | Error e ->
                        let reason = ToolError.describe e
                        log "error" "engine" (if e.IsTimedOut then reason else $"failed: {reason}")
                        finish RunStatus.Failed (Some reason)
            finally
                active.TryRemove run.RunId |> ignore
                use stopped = new ManualResetEvent false

                if renew.Dispose stopped then
                    stopped.WaitOne() |> ignore

    member private this.Worker(stopping: CancellationToken) : Task = task {
        while not stopping.IsCancellationRequested do
            let claimed =
                try
                    let now = time.GetUtcNow()
                    runs.ClaimNext(owner, now, now + RunEngine.LeaseDuration)
                with e ->
                    logger.LogError(e, "claiming a run failed")
                    None

            match claimed with
            | Some run ->
                try
                    do! Task.Run((fun () -> this.Execute run stopping), CancellationToken.None)
                with e ->
                    logger.LogError(e, "run {RunId} failed with an unexpected error", run.RunId)

                    try
                        runs.AppendLog(
                            run.RunId,
                            "error",
                            "internal error (see the service log)",
                            "engine",
                            time.GetUtcNow()
                        )
                        |> ignore

                        runs.Finish(run.RunId, owner, RunStatus.Failed, Some "internal error", time.GetUtcNow())
                        |> ignore
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
