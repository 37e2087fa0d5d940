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

/// Turning stored parameters back into tool input, and files into artifact records.
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

    /// The content type of an artifact by its extension.
    let contentType (file: string) : string =
        match Path.GetExtension(file).ToLowerInvariant() with
        | ".csv" -> "text/csv; charset=utf-8"
        | ".json" -> "application/json"
        | ".jsonl" -> "application/jsonl"
        | ".html" -> "text/html; charset=utf-8"
        | ".png" -> "image/png"
        | _ -> "application/octet-stream"

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

    interface IRunEngine with
        member _.Notify() = wake.Release() |> ignore

        member _.Cancel(runId: string) =
            match active.TryGetValue runId with
            | true, cts -> cts.Cancel()
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

        match Catalog.tryFind run.ToolId with
        | None ->
            runs.Finish(
                run.RunId,
                owner,
                RunStatus.Failed,
                Some $"no tool '{run.ToolId}' in this build",
                time.GetUtcNow()
            )
            |> ignore
        | Some tool ->
            use doc = JsonDocument.Parse run.ParamsJson

            match Parameters.validateFor tool (RunParameters.ofObject doc.RootElement) with
            | Error errors ->
                let detail =
                    String.Join("; ", errors |> List.map (fun e -> $"{e.Parameter}: {e.Detail}"))

                runs.Finish(run.RunId, owner, RunStatus.Failed, Some $"invalid parameters: {detail}", time.GetUtcNow())
                |> ignore
            | Ok parameters ->
                // A run claimed again after its worker died starts from an empty folder.
                if Directory.Exists outDir then
                    Directory.Delete(outDir, true)

                Directory.CreateDirectory outDir |> ignore
                use runCts = CancellationTokenSource.CreateLinkedTokenSource stopping
                runCts.CancelAfter config.RunTimeout
                active[run.RunId] <- runCts
                let mutable lastProgress = -1.0
                let mutable lastProgressAt = DateTimeOffset.MinValue

                let input =
                    match run.Input.Type with
                    | "path" -> InputPaths.resolve config.InputRoots run.Input.Value
                    | "upload" ->
                        match runs.GetUpload run.Input.Value with
                        | Some upload when File.Exists upload.Path -> Ok upload.Path
                        | _ -> Error $"upload {run.Input.Value} is gone"
                    | other -> Error $"input type '{other}' is not readable by this build"

                // Renews the lease and watches the store's cancel flag (set by any process).
                use renew =
                    new Timer(
                        (fun _ ->
                            try
                                if
                                    not (runs.RenewLease(run.RunId, owner, time.GetUtcNow() + RunEngine.LeaseDuration))
                                then
                                    runCts.Cancel()
                                elif (runs.GetRun run.RunId |> Option.exists _.CancelRequested) then
                                    runCts.Cancel()
                            with e ->
                                logger.LogWarning(e, "lease renewal of run {RunId} failed", run.RunId)),
                        null,
                        TimeSpan.FromSeconds 1.0,
                        TimeSpan.FromSeconds 1.0
                    )

                try
                    match input with
                    | Error reason ->
                        log "error" "engine" $"input: {reason}"

                        runs.Finish(run.RunId, owner, RunStatus.Failed, Some $"input: {reason}", time.GetUtcNow())
                        |> ignore
                    | Ok inputPath ->
                        log "info" "engine" $"started {tool.Descriptor.Id} (worker {owner})"

                        let context: ToolContext = {
                            Input = inputPath
                            Parameters = parameters
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
                            ResolveFile = resolveFile
                        }

                        let result =
                            try
                                tool.Run context
                            with :? OperationCanceledException when runCts.IsCancellationRequested ->
                                Error ToolFailure.Canceled

                        let now = time.GetUtcNow()

                        match result with
                        | Ok output ->
                            let artifacts = [
                                for name in output.Artifacts do
                                    let path = Path.Combine(outDir, name)

                                    if File.Exists path then
                                        use stream = File.OpenRead path

                                        {
                                            ArtifactId = Guid.NewGuid().ToString()
                                            RunId = run.RunId
                                            Filename = name
                                            ContentType = RunParameters.contentType name
                                            Size = stream.Length
                                            Sha256 = Convert.ToHexString(SHA256.HashData stream).ToLowerInvariant()
                                            Path = path
                                            CreatedAt = now
                                        }
                            ]

                            runs.AddArtifacts artifacts
                            log "info" "engine" $"completed: {output.Summary}"

                            runs.Finish(run.RunId, owner, RunStatus.Completed, None, time.GetUtcNow())
                            |> ignore
                        | Error(ToolFailure.InvalidInput reason) ->
                            log "error" "engine" $"failed: {reason}"
                            runs.Finish(run.RunId, owner, RunStatus.Failed, Some reason, now) |> ignore
                        | Error ToolFailure.Canceled when stopping.IsCancellationRequested ->
                            // Shutting down: the run goes back to the queue for the next start.
                            log "warning" "engine" "service stopping: the run is queued again"
                            runs.Requeue(run.RunId, owner)
                        | Error ToolFailure.Canceled when runs.GetRun run.RunId |> Option.exists _.CancelRequested ->
                            log "warning" "engine" "canceled on request"

                            runs.Finish(run.RunId, owner, RunStatus.Canceled, Some "canceled on request", now)
                            |> ignore
                        | Error ToolFailure.Canceled ->
                            let reason = $"timed out after {config.RunTimeout.TotalSeconds} s"
                            log "error" "engine" reason
                            runs.Finish(run.RunId, owner, RunStatus.Failed, Some reason, now) |> ignore
                finally
                    active.TryRemove run.RunId |> ignore

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
