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

let all =
    testList "engine" [
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
    ]
