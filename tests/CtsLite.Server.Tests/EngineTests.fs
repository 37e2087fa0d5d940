/// The execution engine alone (no HTTP): its lease renewal against runs that finish while a
/// renewal is in flight, and its outcomes through the one run path.
module CtsLite.Server.Tests.EngineTests

open System
open System.Collections.Concurrent
open System.IO
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging
open Expecto
open CtsLite.Server
open CtsLite.Tests

/// Keeps every warning and error the engine logs, with its exception.
type private CapturingLogger() =
    member val Entries = ConcurrentQueue<LogLevel * string * exn>()

    interface ILogger<RunEngine> with
        member _.BeginScope _ = null
        member _.IsEnabled level = level >= LogLevel.Warning

        member this.Log(level, _, state, error, formatter) =
            if level >= LogLevel.Warning then
                this.Entries.Enqueue((level, formatter.Invoke(state, error), error))

let private queued (toolId: string) (input: string) : RunRecord =
    RunRecord.queued toolId "{}" (CtsLite.InputRef.Path input) None DateTimeOffset.UtcNow

/// Waits (bounded) until every run is terminal; the runs as stored.
let private waitAll (runs: IRunStore) (ids: string list) (limit: TimeSpan) = task {
    let deadline = DateTime.UtcNow + limit

    let terminal (r: RunRecord) =
        r.Status <> RunStatus.Queued && r.Status <> RunStatus.Running

    let read () = task {
        let found = ResizeArray<RunRecord>()

        for id in ids do
            match! runs.GetRun id with
            | Some r -> found.Add r
            | None -> ()

        return List.ofSeq found
    }

    let! first = read ()
    let mutable records = first

    while not (records.Length = ids.Length && List.forall terminal records)
          && DateTime.UtcNow < deadline do
        do! Task.Delay 20
        let! next = read ()
        records <- next

    return records
}

/// The store `inner`, except that claiming fails as a store that went away does; counts the claims.
type private ClaimsFail(inner: IRunStore) =
    member val Claims = 0 with get, set

    interface IRunStore with
        member _.CreateRun(run, idempotency, maxQueued) =
            inner.CreateRun(run, idempotency, maxQueued)

        member _.GetRun runId = inner.GetRun runId

        member _.ListRuns(status, toolId, cursor, limit) =
            inner.ListRuns(status, toolId, cursor, limit)

        member this.ClaimNext(_, _, _) =
            this.Claims <- this.Claims + 1
            Task.FromException<RunRecord option>(IOException "the store went away")

        member _.RenewLease(runId, owner, until) = inner.RenewLease(runId, owner, until)

        member _.SetProgress(runId, owner, progress) =
            inner.SetProgress(runId, owner, progress)

        member _.Requeue(runId, owner) = inner.Requeue(runId, owner)

        member _.Finish(runId, owner, status, error, now) =
            inner.Finish(runId, owner, status, error, now)

        member _.RequestCancel(runId, now) = inner.RequestCancel(runId, now)

        member _.AppendLog(runId, level, message, source, now) =
            inner.AppendLog(runId, level, message, source, now)

        member _.GetLogs(runId, afterSeq) = inner.GetLogs(runId, afterSeq)
        member _.AddArtifacts artifacts = inner.AddArtifacts artifacts
        member _.ListArtifacts runId = inner.ListArtifacts runId
        member _.GetArtifact artifactId = inner.GetArtifact artifactId
        member _.AddUpload upload = inner.AddUpload upload
        member _.GetUpload uploadId = inner.GetUpload uploadId
        member _.ListUploads limit = inner.ListUploads limit
        member _.DeleteUpload uploadId = inner.DeleteUpload uploadId
        member _.TouchUpload(uploadId, now) = inner.TouchUpload(uploadId, now)
        member _.ExpiredUploads cutoff = inner.ExpiredUploads cutoff

        member _.DeleteExpiredUpload(uploadId, cutoff) =
            inner.DeleteExpiredUpload(uploadId, cutoff)

        member _.ExpiredArtifacts cutoff = inner.ExpiredArtifacts cutoff
        member _.DeleteArtifact artifactId = inner.DeleteArtifact artifactId
        member _.Storage() = inner.Storage()

let all =
    testList "engine" [
        testCaseTask "while claiming fails, the worker backs off and logs the condition once" (fun () -> task {
            let dataDir = TestEnv.tempDir "backoff"
            use _store = EndpointTests.openStore dataDir
            let failing = ClaimsFail(SqliteRunStore.create dataDir)

            let clock =
                Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow)

            let logger = CapturingLogger()

            let config = {
                EndpointTests.configFor dataDir with
                    MaxConcurrentRuns = 1
            }

            use engine =
                new RunEngine(config, failing, clock, logger, RunInputs.fileResolver failing [])

            do! engine.StartAsync CancellationToken.None

            // Eight minutes of the service's clock, a second at a time: polling every second would
            // claim 480 times; the back-off (1 s doubling to 60 s) claims about 14 times. A worker
            // slowed by a busy machine claims less, never more.
            for _ in 1..480 do
                do! Task.Delay 1
                clock.Advance(TimeSpan.FromSeconds 1.0)

            // However slow this machine is, the worker gets through its first back-offs (still
            // within ten minutes of the clock, so within one logging interval).
            let mutable extra = 0

            while failing.Claims < 4 && extra < 10 do
                do! Task.Delay 200
                clock.Advance(TimeSpan.FromSeconds 10.0)
                extra <- extra + 1

            do! engine.StopAsync CancellationToken.None
            Expect.isGreaterThanOrEqual failing.Claims 4 $"it kept trying ({failing.Claims} claims)"
            Expect.isLessThan failing.Claims 30 $"with back-off ({failing.Claims} claims)"

            let errors =
                logger.Entries
                |> Seq.filter (fun (level, _, _) -> level = LogLevel.Error)
                |> List.ofSeq

            Expect.equal errors.Length 1 "logged once in ten minutes, not once a claim"
        })
        testCaseTask "a lease renewal in flight when a run finishes never touches its disposed cancellation" (fun () -> task {
            let dataDir = TestEnv.tempDir "engine"
            let roots = [ Path.Combine(TestEnv.sharedDir (), "data", "rlogs") ]

            let config = {
                EndpointTests.configFor dataDir with
                    InputRoots = roots
                    MaxConcurrentRuns = 2
            }

            use _store = EndpointTests.openStore dataDir
            let runs = SqliteRunStore.create dataDir
            let logger = CapturingLogger()

            // Renewing every millisecond makes a callback run while nearly every run ends: the
            // engine once disposed the run's token source under such a callback.
            use engine =
                new RunEngine(
                    config,
                    runs,
                    TimeProvider.System,
                    logger,
                    RunInputs.fileResolver runs roots,
                    RenewInterval = TimeSpan.FromMilliseconds 1.0
                )

            let queuedIds = ResizeArray<string>()

            for _ in 1..24 do
                let run = queued "log-summary" "synthetic/default.rlog.zst"
                let! _ = runs.CreateRun(run, None, 1000)
                queuedIds.Add run.RunId

            let ids = List.ofSeq queuedIds

            do! engine.StartAsync CancellationToken.None
            (engine :> IRunEngine).Notify()
            let! records = waitAll runs ids (TimeSpan.FromMinutes 2.0)
            do! engine.StopAsync CancellationToken.None

            Expect.equal (records |> List.map _.Status |> List.distinct) [ RunStatus.Completed ] "every run completed"

            let problems =
                logger.Entries |> List.ofSeq |> List.map (fun (l, m, e) -> l, m, string e)

            Expect.isEmpty problems "the engine logged no warning or error"
        })
        testCaseTask "a run claimed max_attempts times without an end on record is failed, not run again" (fun () -> task {
            let dataDir = TestEnv.tempDir "attempts"
            let roots = [ Path.Combine(TestEnv.sharedDir (), "data", "rlogs") ]

            let config = {
                EndpointTests.configFor dataDir with
                    InputRoots = roots
                    MaxAttempts = 3
            }

            use _store = EndpointTests.openStore dataDir
            let runs = SqliteRunStore.create dataDir
            let run = queued "log-summary" "synthetic/default.rlog.zst"
            let! _ = runs.CreateRun(run, None, 1000)

            // Three workers that claimed it an hour ago and died (or could not record its end):
            // each lease ran out before the next claim.
            let past = DateTimeOffset.UtcNow.AddHours -1.0

            for i in 0..2 do
                let at = past.AddMinutes(float i)
                let! claimed = runs.ClaimNext($"dead-{i}", at, at.AddSeconds 30.0)
                Expect.equal (claimed |> Option.map _.Attempts) (Some(i + 1)) $"claim {i + 1} counted"

            let logger = CapturingLogger()

            use engine =
                new RunEngine(config, runs, TimeProvider.System, logger, RunInputs.fileResolver runs roots)

            do! engine.StartAsync CancellationToken.None
            (engine :> IRunEngine).Notify()
            let! records = waitAll runs [ run.RunId ] (TimeSpan.FromMinutes 1.0)
            do! engine.StopAsync CancellationToken.None

            match records with
            | [ r ] ->
                Expect.equal r.Status RunStatus.Failed "failed"
                Expect.equal r.Attempts 4 "the fourth claim gave up"
                Expect.stringContains (r.Error |> Option.defaultValue "") "gave up after 3 attempts" "says why"
            | other -> failtestf "%A" other

            let! logs = runs.GetLogs(run.RunId, 0L)

            Expect.isFalse
                (logs |> List.exists (fun l -> l.Message.StartsWith "started"))
                "the tool never started again"
        })
        testCaseTask "a run blocked in a read no cancellation reaches still ends canceled or timed out" (fun () -> task {
            let dataDir = TestEnv.tempDir "blocked"
            let roots = [ Path.Combine(TestEnv.sharedDir (), "data", "rlogs") ]

            let config = {
                EndpointTests.configFor dataDir with
                    InputRoots = roots
                    MaxConcurrentRuns = 2
                    RunTimeout = TimeSpan.FromSeconds 1.0
            }

            use _store = EndpointTests.openStore dataDir
            let runs = SqliteRunStore.create dataDir
            let logger = CapturingLogger()
            use release = new ManualResetEventSlim(false)

            // The DBC sits on a mount that hung: reading it blocks, deaf to every token, until the
            // test lets it go.
            let hung (_: string list) =
                Task.FromResult(fun (value: string) ->
                    release.Wait()
                    Ok value)

            use engine =
                new RunEngine(config, runs, TimeProvider.System, logger, hung, StopGrace = TimeSpan.FromSeconds 0.5)

            let blocked () =
                RunRecord.queued
                    "signal-export"
                    """{"dbc":"hung.dbc","signals":["Wheel_Speeds.FL"]}"""
                    (CtsLite.InputRef.Path "synthetic/default.rlog.zst")
                    None
                    DateTimeOffset.UtcNow

            let toCancel, toTimeOut = blocked (), blocked ()

            try
                for run in [ toCancel; toTimeOut ] do
                    let! _ = runs.CreateRun(run, None, 1000)
                    ()

                do! engine.StartAsync CancellationToken.None
                (engine :> IRunEngine).Notify()
                (engine :> IRunEngine).Notify()

                // Cancel one as the API does: the store's flag and the engine's token.
                let mutable running = false

                while not running do
                    do! Task.Delay 20

                    match! runs.GetRun toCancel.RunId with
                    | Some r when r.Status = RunStatus.Running -> running <- true
                    | _ -> ()

                let! _ = runs.RequestCancel(toCancel.RunId, DateTimeOffset.UtcNow)
                (engine :> IRunEngine).Cancel toCancel.RunId

                let! records =
                    waitAll runs [ toCancel.RunId; toTimeOut.RunId ] (TimeSpan.FromSeconds 30.0)

                match records with
                | [ canceled; timedOut ] ->
                    Expect.equal canceled.Status RunStatus.Canceled "canceled while blocked"
                    Expect.equal timedOut.Status RunStatus.Failed "failed while blocked"
                    Expect.stringContains (timedOut.Error |> Option.defaultValue "") "timed out" "by its time limit"
                | other -> failtestf "%A" other

                let! logs = runs.GetLogs(toCancel.RunId, 0L)

                Expect.exists logs (fun l -> l.Message.Contains "did not stop within 0.5 s") "the log says it was left"
                Expect.isFalse release.IsSet "ended while the read was still blocked"
            finally
                release.Set()

            do! engine.StopAsync CancellationToken.None
            Expect.isEmpty (List.ofSeq logger.Entries) "nothing for the operator beyond the run's own log"
        })
    ]
