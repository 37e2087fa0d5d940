/// Retention, CORS, and the configurable limits (concurrent uploads, queued runs, JSON bodies, SSE
/// keepalive), in process with the real pipeline and store.
module CtsLite.Server.Tests.LimitsTests

open System
open System.IO
open System.Net
open System.Net.Http
open System.Text
open System.Text.Json
open System.Threading
open System.Threading.Tasks
open Expecto
open Microsoft.Extensions.Time.Testing
open CtsLite.Server
open CtsLite.Tests

let private rlog () =
    Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "default.rlog.zst")

let private upload (client: HttpClient) (bytes: byte array) (name: string) = task {
    use content = new ByteArrayContent(bytes)
    content.Headers.Add("X-Filename", name)
    return! client.PostAsync("/v1/uploads", content)
}

let private postRun (client: HttpClient) (body: string) (key: string option) = task {
    use request = new HttpRequestMessage(HttpMethod.Post, "/v1/runs")
    request.Content <- new StringContent(body, Encoding.UTF8, "application/json")
    key |> Option.iter (fun k -> request.Headers.Add("Idempotency-Key", k))
    return! client.SendAsync request
}

let private summaryOf (input: string) =
    $"""{{"tool_id":"log-summary","params":{{}},"input":{{"type":"path","value":"{input}"}}}}"""

let private summaryOfUpload (id: string) =
    $"""{{"tool_id":"log-summary","params":{{}},"input":{{"type":"upload","value":"{id}"}}}}"""

/// A request body that sends its first bytes, then waits for `release` before the rest.
type private HeldContent(first: byte array, rest: byte array, started: TaskCompletionSource, release: Task) =
    inherit HttpContent()

    override _.SerializeToStreamAsync(stream: Stream, _: TransportContext) : Task = task {
        do! stream.WriteAsync(first, 0, first.Length)
        do! stream.FlushAsync()
        started.TrySetResult() |> ignore
        do! release
        do! stream.WriteAsync(rest, 0, rest.Length)
    }

    override _.TryComputeLength(length: byref<int64>) =
        length <- 0L
        false

let private health (client: HttpClient) = task {
    let! response = client.GetAsync "/v1/health"
    return! EndpointTests.parse response
}

let retention =
    testList "retention" [
        testCaseTask "uploads and artifacts older than retention_days are swept, records first, files after" (fun () ->
            // The service's clock is a fake, advanced by the test (health snapshots age by it).
            let clock = FakeTimeProvider(DateTimeOffset.UtcNow)

            RunTests.withClock clock [] 1 (fun c -> { c with RetentionDays = 7 }) (fun svc client -> task {
                let bytes = File.ReadAllBytes(rlog ())
                let! first = upload client bytes "default.rlog.zst"
                Expect.equal first.StatusCode HttpStatusCode.Created "uploaded"
                let! u = EndpointTests.parse first
                let uploadId = u.GetProperty("upload_id").GetString()
                let! created = postRun client (summaryOfUpload uploadId) None
                let! run = EndpointTests.parse created
                let runId = run.GetProperty("run_id").GetString()

                do!
                    TestEnv.waitUntil $"run {runId} completed" (TimeSpan.FromMinutes 1.0) (fun () -> task {
                        let! r = client.GetAsync $"/v1/runs/{runId}"
                        let! r = EndpointTests.parse r
                        let status = r.GetProperty("status").GetString()
                        Expect.notEqual status "failed" "the run works"
                        return status = "completed"
                    })

                let! before = health client
                let storage = before.GetProperty "storage"
                Expect.equal (storage.GetProperty("uploads").GetInt32()) 1 "one upload"
                Expect.equal (storage.GetProperty("upload_bytes").GetInt64()) bytes.LongLength "its bytes"
                let artifacts = storage.GetProperty("artifacts").GetInt32()
                Expect.isGreaterThan artifacts 0 "the run's artifacts"
                Expect.equal (storage.GetProperty("retention_days").GetInt32()) 7 "retention shown"

                Expect.isGreaterThanOrEqual
                    (before.GetProperty("store_size_bytes").GetInt64())
                    (storage.GetProperty("database_bytes").GetInt64()
                     + bytes.LongLength
                     + storage.GetProperty("artifact_bytes").GetInt64())
                    "store size counts the files"

                let uploads = Path.Combine(svc.Config.DataDir, "uploads")
                let oldPart = Path.Combine(uploads, ".dead.part")
                let freshPart = Path.Combine(uploads, ".streaming.part")
                let orphan = Path.Combine(uploads, Guid.NewGuid().ToString())

                for f in [ oldPart; freshPart; orphan ] do
                    File.WriteAllText(f, "x")

                for f in [ oldPart; orphan ] do
                    File.SetLastWriteTimeUtc(f, DateTime.UtcNow.AddHours -2.0)

                let now = clock.GetUtcNow()
                let! strays = Retention.sweep svc.Config svc.Runs now
                Expect.equal strays.StrayFiles 2 "the dead .part file and the unrecorded file"
                Expect.isTrue (File.Exists freshPart) "a .part file still being written stays"
                File.Delete freshPart
                let! early = Retention.sweep svc.Config svc.Runs (now.AddDays 6.0)
                Expect.equal (early.Uploads, early.Artifacts) (0, 0) "nothing is 7 days old yet"

                let! listedArtifacts = svc.Runs.ListArtifacts(Some runId)
                let artifactIds = [ for a in listedArtifacts -> a.ArtifactId ]

                let! report = Retention.sweep svc.Config svc.Runs (now.AddDays 8.0)
                Expect.equal report.Uploads 1 "the upload"
                Expect.equal report.UploadBytes bytes.LongLength "its bytes"
                Expect.equal report.Artifacts artifacts "every artifact"
                Expect.isFalse (Directory.Exists(Path.Combine(svc.Config.DataDir, "runs", runId))) "the run folder"

                let! goneUpload = client.GetAsync $"/v1/uploads/{uploadId}"
                let! _ = EndpointTests.expectProblem goneUpload 404

                for id in artifactIds do
                    let! gone = client.GetAsync $"/v1/artifacts/{id}/download"
                    let! _ = EndpointTests.expectProblem gone 404
                    ()

                let! runAfter = client.GetAsync $"/v1/runs/{runId}"
                Expect.equal runAfter.StatusCode HttpStatusCode.OK "the run record stays"
                // Health answers from a snapshot at most a second old: a second later, a new one.
                clock.Advance(Handlers.healthMaxAge + TimeSpan.FromMilliseconds 1.0)
                let! after = health client
                let storage = after.GetProperty "storage"
                Expect.equal (storage.GetProperty("uploads").GetInt32()) 0 "no uploads"
                Expect.equal (storage.GetProperty("artifacts").GetInt32()) 0 "no artifacts"
                Expect.isEmpty (Directory.GetFiles uploads) "no upload file left"
            }))
        testCaseTask "an upload a queued run names, or one used again, is kept; retention_days = 0 keeps all" (fun () ->
            RunTests.withConfig [] 1 (fun c -> { c with MaxConcurrentRuns = 0 }) (fun svc client -> task {
                let bytes = File.ReadAllBytes(rlog ())
                let! first = upload client bytes "a.zst"
                let! u = EndpointTests.parse first
                let queuedFor = u.GetProperty("upload_id").GetString()
                let! queued = postRun client (summaryOfUpload queuedFor) None
                Expect.equal queued.StatusCode HttpStatusCode.Accepted "queued"
                let! other = upload client (Array.append bytes [| 0uy |]) "b.zst"
                let! o = EndpointTests.parse other
                let otherId = o.GetProperty("upload_id").GetString()
                let now = DateTimeOffset.UtcNow

                let! keepAll =
                    Retention.sweep { svc.Config with RetentionDays = 0 } svc.Runs (now.AddDays 100.0)

                Expect.equal keepAll.Uploads 0 "0 days: kept forever"

                // Used again now (the same content uploaded): its age starts over.
                do! svc.Runs.TouchUpload(otherId, now.AddDays 5.0)
                let! touched = Retention.sweep svc.Config svc.Runs (now.AddDays 8.0)
                Expect.equal touched.Uploads 0 "used 3 days before the sweep: kept; the queued run's: kept"
                let! later = Retention.sweep svc.Config svc.Runs (now.AddDays 13.0)
                Expect.equal later.Uploads 1 "8 days after its last use"
                let! kept = svc.Runs.GetUpload queuedFor
                let! gone = svc.Runs.GetUpload otherId
                Expect.isSome kept "the queued run's input stays"
                Expect.isNone gone "the other one went"

                // A run queued between the sweep's listing and its delete keeps its upload.
                let! late = upload client (Array.append bytes [| 2uy |]) "c.zst"
                let! l = EndpointTests.parse late
                let lateId = l.GetProperty("upload_id").GetString()
                let cutoff = now.AddDays 30.0
                let! expired = svc.Runs.ExpiredUploads cutoff
                let listed = expired |> List.map _.UploadId
                Expect.contains listed lateId "listed as expired"
                let! queuedLate = postRun client (summaryOfUpload lateId) None
                Expect.equal queuedLate.StatusCode HttpStatusCode.Accepted "a run names it now"
                let! deleted = svc.Runs.DeleteExpiredUpload(lateId, cutoff)
                Expect.isFalse deleted "the delete sees the run and keeps it"
                let! still = svc.Runs.GetUpload lateId
                Expect.isSome still "still there"
            }))
    ]

let cors =
    testList "CORS" [
        testCaseTask "configured origins get preflights answered and headers exposed; others get nothing" (fun () ->
            RunTests.withConfig
                []
                1
                (fun c -> {
                    c with
                        CorsOrigins = [ "https://app.example.com" ]
                        JwtSecret = Some "a-test-secret-that-is-long-enough-1234"
                })
                (fun _ client -> task {
                    use preflight = new HttpRequestMessage(HttpMethod.Options, "/v1/runs")
                    preflight.Headers.Add("Origin", "https://app.example.com")
                    preflight.Headers.Add("Access-Control-Request-Method", "POST")
                    preflight.Headers.Add("Access-Control-Request-Headers", "authorization,idempotency-key")
                    let! answer = client.SendAsync preflight
                    Expect.equal answer.StatusCode HttpStatusCode.NoContent "preflight answered without a token"

                    let header (r: HttpResponseMessage) (name: string) =
                        match r.Headers.TryGetValues name with
                        | true, v -> String.Join(",", v)
                        | false, _ -> ""

                    Expect.equal
                        (header answer "Access-Control-Allow-Origin")
                        "https://app.example.com"
                        "origin allowed"

                    Expect.stringContains (header answer "Access-Control-Allow-Methods") "POST" "POST allowed"

                    Expect.stringContains
                        ((header answer "Access-Control-Allow-Headers").ToLowerInvariant())
                        "idempotency-key"
                        "headers allowed"

                    use get = new HttpRequestMessage(HttpMethod.Get, "/v1/health")
                    get.Headers.Add("Origin", "https://app.example.com")
                    let! allowed = client.SendAsync get
                    Expect.equal (header allowed "Access-Control-Allow-Origin") "https://app.example.com" "simple GET"
                    Expect.stringContains (header allowed "Access-Control-Expose-Headers") "Retry-After" "exposed"

                    use foreign = new HttpRequestMessage(HttpMethod.Get, "/v1/health")
                    foreign.Headers.Add("Origin", "https://evil.example.com")
                    let! refused = client.SendAsync foreign
                    Expect.equal (header refused "Access-Control-Allow-Origin") "" "another origin gets no grant"

                    use anonymous = new HttpRequestMessage(HttpMethod.Get, "/v1/runs")
                    anonymous.Headers.Add("Origin", "https://app.example.com")
                    let! unauthorized = client.SendAsync anonymous
                    Expect.equal unauthorized.StatusCode HttpStatusCode.Unauthorized "CORS does not bypass auth"
                }))
        testCaseTask "no origins configured: no CORS headers" (fun () ->
            RunTests.withConfig [] 1 id (fun _ client -> task {
                use get = new HttpRequestMessage(HttpMethod.Get, "/v1/health")
                get.Headers.Add("Origin", "https://app.example.com")
                let! response = client.SendAsync get
                Expect.isFalse (response.Headers.Contains "Access-Control-Allow-Origin") "no grant"
            }))
    ]

let limits =
    testList "limits" [
        testCaseTask "max_concurrent_uploads: one more upload gets 429 + Retry-After until a slot frees" (fun () ->
            RunTests.withConfig [] 1 (fun c -> { c with MaxConcurrentUploads = 1 }) (fun svc client -> task {
                let bytes = File.ReadAllBytes(rlog ())
                let started = TaskCompletionSource()
                let release = TaskCompletionSource()

                use held = new HeldContent(bytes[..4095], bytes[4096..], started, release.Task)

                held.Headers.Add("X-Filename", "held.zst")
                let holding = client.PostAsync("/v1/uploads", held)
                do! started.Task.WaitAsync(TimeSpan.FromSeconds 30.0)
                // The server has taken the slot once it reads the first bytes.
                let deadline = DateTime.UtcNow.AddSeconds 30.0

                while svc.Uploads.InUse = 0 && DateTime.UtcNow < deadline do
                    do! Task.Delay 10

                let! refused = upload client (Array.append bytes [| 1uy |]) "second.zst"
                let! p = EndpointTests.expectProblem refused 429
                Expect.stringContains (p.GetProperty("detail").GetString()) "max_concurrent_uploads" "names the limit"
                Expect.isTrue refused.Headers.RetryAfter.Delta.HasValue "Retry-After"
                release.SetResult()
                let! first = holding
                Expect.equal first.StatusCode HttpStatusCode.Created "the held upload completes"
                let! again = upload client (Array.append bytes [| 1uy |]) "second.zst"
                Expect.equal again.StatusCode HttpStatusCode.Created "the slot was given back"
                Expect.equal svc.Uploads.InUse 0 "no slot leaked"
            }))
        testCaseTask
            "max_queued_runs: a full queue refuses new runs with 429; an idempotent replay still answers"
            (fun () ->
                RunTests.withConfig
                    []
                    1
                    (fun c -> {
                        c with
                            MaxConcurrentRuns = 0
                            MaxQueuedRuns = 2
                    })
                    (fun _ client -> task {
                        let body = summaryOf "synthetic/default.rlog.zst"
                        let! a = postRun client body (Some "a")
                        let! b = postRun client body None

                        Expect.equal
                            (a.StatusCode, b.StatusCode)
                            (HttpStatusCode.Accepted, HttpStatusCode.Accepted)
                            "two fit"

                        let! c = postRun client body None
                        let! p = EndpointTests.expectProblem c 429

                        Expect.stringContains
                            (p.GetProperty("detail").GetString())
                            "max_queued_runs"
                            "names the limit"

                        Expect.isTrue c.Headers.RetryAfter.Delta.HasValue "Retry-After"
                        let! replay = postRun client body (Some "a")
                        Expect.equal replay.StatusCode HttpStatusCode.Accepted "the replay returns the run it made"
                        let! first = EndpointTests.parse a
                        let id = first.GetProperty("run_id").GetString()
                        let! canceled = client.PostAsync($"/v1/runs/{id}/cancel", null)
                        Expect.isTrue canceled.IsSuccessStatusCode "cancel one"
                        let! d = postRun client body None
                        Expect.equal d.StatusCode HttpStatusCode.Accepted "room again"
                    }))
        testCaseTask "max_json_body_bytes bounds JSON bodies (413)" (fun () ->
            RunTests.withConfig [] 1 (fun c -> { c with MaxJsonBodyBytes = 1024 }) (fun _ client -> task {
                let padded =
                    $"""{{"tool_id":"log-summary","name":"{String('n', 2000)}","params":{{}},"input":{{"type":"path","value":"synthetic/default.rlog.zst"}}}}"""

                let! refused = postRun client padded None
                let! _ = EndpointTests.expectProblem refused 413
                let! fits = postRun client (summaryOf "synthetic/default.rlog.zst") None
                Expect.equal fits.StatusCode HttpStatusCode.Accepted "a small body passes"
            }))
        testCaseTask "sse_keepalive_s: a quiet stream gets keepalive comments at that interval" (fun () ->
            RunTests.withConfig
                []
                1
                (fun c -> {
                    c with
                        MaxConcurrentRuns = 0
                        SseKeepalive = TimeSpan.FromSeconds 1.0
                })
                (fun _ client -> task {
                    let! created = postRun client (summaryOf "synthetic/default.rlog.zst") None
                    let! run = EndpointTests.parse created
                    let id = run.GetProperty("run_id").GetString()

                    use! response =
                        client.GetAsync($"/v1/runs/{id}/logs", HttpCompletionOption.ResponseHeadersRead)

                    use! stream = response.Content.ReadAsStreamAsync()
                    use reader = new StreamReader(stream)
                    let mutable keepalives = 0
                    use timeout = new CancellationTokenSource(TimeSpan.FromSeconds 20.0)

                    while keepalives < 2 do
                        let! line = reader.ReadLineAsync(timeout.Token)

                        if line = ": keepalive" then
                            keepalives <- keepalives + 1

                    let! _ = client.PostAsync($"/v1/runs/{id}/cancel", null)
                    let! rest = reader.ReadToEndAsync(timeout.Token)
                    Expect.stringContains rest "event: end" "the stream ends once the run is canceled"
                }))
    ]

let all = testList "retention, CORS and limits" [ retention; cors; limits ]
