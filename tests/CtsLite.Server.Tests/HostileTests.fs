/// Hostile clients: malformed bodies get a 400 that says what is wrong, never a 500, and leave
/// nothing behind (the service helpers are RunTests').
module CtsLite.Server.Tests.HostileTests

open System
open System.IO
open System.Net
open System.Net.Http
open System.Net.Http.Headers
open System.Text
open System.Text.Json
open Microsoft.AspNetCore.TestHost
open Microsoft.Extensions.Time.Testing
open Expecto
open CtsLite.Server
open CtsLite.Tests
open CtsLite.Server.Tests.RunTests

/// POST /v1/uploads with exactly this Content-Type and body.
let private upload (client: HttpClient) (contentType: string) (body: byte array) = task {
    use request = new HttpRequestMessage(HttpMethod.Post, "/v1/uploads")
    request.Content <- new ByteArrayContent(body)

    request.Content.Headers.TryAddWithoutValidation("Content-Type", contentType)
    |> ignore

    return! client.SendAsync request
}

let private multipart =
    testList "multipart" [
        testCaseTask "a malformed multipart body is a 400 naming the problem; nothing is kept" (fun () ->
            withRuns [] 1 (fun svc client -> task {
                let dbc = File.ReadAllText(TestEnv.generatedDbc "subaru_global_2017_generated.dbc")

                let part (boundary: string) (headers: string) (closing: bool) =
                    Encoding.ASCII.GetBytes(
                        $"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.dbc\"\r\n{headers}\r\n{dbc}\r\n"
                        + (if closing then $"--{boundary}--\r\n" else "")
                    )

                let long = String('b', 200)

                for name, contentType, body, expected in
                    [
                        "no boundary", "multipart/form-data", part "x" "" true, "boundary"
                        "a 200-character boundary", $"multipart/form-data; boundary={long}", part long "" true, "70"
                        "not multipart at all",
                        "multipart/form-data; boundary=zz",
                        Encoding.ASCII.GetBytes "hello",
                        "boundary"
                        "an unterminated part", "multipart/form-data; boundary=zz", part "zz" "" false, "ended"
                        "a part header over 16 KiB",
                        "multipart/form-data; boundary=zz",
                        part "zz" $"X-Pad: {String('p', 20_000)}\r\n" true,
                        "16 KiB"
                        "a broken media type",
                        "multipart/form-data; boundary=\"unclosed",
                        part "zz" "" true,
                        "boundary"
                    ] do
                    let! response = upload client contentType body
                    let! problem = EndpointTests.expectProblem response 400
                    Expect.stringContains (problem.GetProperty("detail").GetString()) expected name

                let uploads = Path.Combine(svc.Config.DataDir, "uploads")

                let left =
                    if Directory.Exists uploads then
                        Directory.GetFiles uploads
                    else
                        [||]

                Expect.isEmpty left "no file, not even a partial one, is left"

                // The well-formed body still works.
                let! good = upload client "multipart/form-data; boundary=zz" (part "zz" "" true)
                Expect.equal good.StatusCode HttpStatusCode.Created "a good multipart upload"
            }))
    ]

let private bounded =
    testList "bounded answers" [
        testCaseTask "a run name over 256 bytes and 60,000 unknown parameters get small 422s" (fun () ->
            withRuns [] 1 (fun _ client -> task {
                let longName =
                    $"""{{"tool_id":"log-summary","name":"{String('n', 300)}","input":{{"type":"path","value":"synthetic/default.rlog.zst"}}}}"""

                let! named = post client longName None
                let! p = EndpointTests.expectProblem named 422
                Expect.equal (p.GetProperty("errors").Item(0).GetProperty("pointer").GetString()) "/name" "the name"

                let many =
                    let ps = String.Join(",", [ for i in 1..60_000 -> $"\"p{i}\":1" ])
                    $"""{{"tool_id":"log-summary","params":{{{ps}}},"input":{{"type":"path","value":"synthetic/default.rlog.zst"}}}}"""

                let! response = post client many None
                Expect.equal (int response.StatusCode) 422 "422"
                let! body = response.Content.ReadAsStringAsync()
                Expect.isLessThan body.Length 4096 $"a small body ({body.Length} bytes)"
                Expect.stringContains body "more than 64 parameters" "says why"
            }))
        testCaseTask "GET /v1/runs is bounded in bytes: a page ends early and its cursor goes on" (fun () ->
            withRuns [] 1 (fun svc client -> task {
                // Runs with large parameters, stored directly (the API refuses values this long).
                let big = String('v', 100_000)

                for i in 1..60 do
                    let run = {
                        RunRecord.queued
                            "log-summary"
                            $"""{{"pad":"{big}"}}"""
                            (CtsLite.InputRef.Path "synthetic/default.rlog.zst")
                            (Some $"run {i}")
                            (DateTimeOffset.UtcNow.AddSeconds(float i)) with
                            Status = RunStatus.Completed
                    }

                    let! _ = svc.Runs.CreateRun(run, None, 100_000)
                    ()

                let seen = Collections.Generic.HashSet<string>()
                let mutable cursor: string option = None
                let mutable pages = 0
                let mutable go = true

                while go do
                    let url =
                        match cursor with
                        | Some c -> $"/v1/runs?limit=500&cursor={Uri.EscapeDataString c}"
                        | None -> "/v1/runs?limit=500"

                    let! response = client.GetAsync(url: string)
                    let! body = response.Content.ReadAsStringAsync()
                    Expect.isLessThan body.Length (5 * 1024 * 1024) $"page {pages} is bounded ({body.Length} bytes)"
                    let page = Text.Json.JsonDocument.Parse(body).RootElement
                    pages <- pages + 1

                    for r in page.GetProperty("runs").EnumerateArray() do
                        Expect.isTrue (seen.Add(r.GetProperty("run_id").GetString())) "no run twice"

                    match page.GetProperty("next_cursor").ValueKind with
                    | Text.Json.JsonValueKind.String -> cursor <- Some(page.GetProperty("next_cursor").GetString())
                    | _ -> go <- false

                Expect.equal seen.Count 60 "every run, over the pages"
                Expect.isGreaterThan pages 1 "more than one page for 6 MB of runs"
            }))
    ]

let private paths =
    testList "paths" [
        testCaseTask "a path outside the roots is refused the same way whether or not it exists" (fun () ->
            withRuns [] 1 (fun _ client -> task {
                let answer (path: string) = task {
                    let! response = post client (runBody "log-summary" "{}" path) None
                    let! problem = EndpointTests.expectProblem response 400
                    return problem.GetProperty("detail").GetString().Replace(path, "<path>")
                }

                let! existing = answer "/etc/hostname"
                let! missing = answer "/etc/no-such-file-here"
                let! missingFolder = answer "/no/such/folder/rlog.zst"
                Expect.stringContains existing "outside the input roots" "refused"
                Expect.equal missing existing "a missing file answers like an existing one"
                Expect.equal missingFolder existing "a missing folder too"
            }))
        testCaseTask "a FIFO as input or DBC is refused when the run is asked for, not read" (fun () ->
            let root = TestEnv.tempDir "fifo-root"
            let segment = Path.Combine(root, "5ca1ab1e5ca1ab1e_2025-01-16--07-45-12--0")
            Directory.CreateDirectory segment |> ignore
            TestEnv.fifo segment "rlog.zst" |> ignore
            TestEnv.fifo root "pipe.rlog.zst" |> ignore
            TestEnv.fifo root "pipe.dbc" |> ignore

            let log =
                Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "default.rlog.zst")

            File.Copy(log, Path.Combine(root, "real.rlog.zst"))

            withRuns [ root ] 1 (fun _ client -> task {
                let refusedAs (status: int) (body: string) = task {
                    let! response = post client body None
                    let! problem = EndpointTests.expectProblem response status
                    return problem.GetProperty("detail").GetString()
                }

                // Named relative to the root: the answer shows that name, not where the root is.
                // The input is a 400, as every unusable path input; a bad parameter is a 422.
                let refused = refusedAs 400
                let! file = refused (runBody "log-summary" "{}" "pipe.rlog.zst")

                Expect.stringContains file "not a regular file: a named pipe (FIFO)" "a FIFO as the input"
                Expect.isFalse (file.Contains root) "no server path"

                let! folder = refused (runBody "log-summary" "{}" segment)
                Expect.stringContains folder "named pipe (FIFO)" "a segment folder whose log is a FIFO"

                let! dbc =
                    refusedAs
                        422
                        (runBody
                            "signal-export"
                            $"""{{"dbc":{JsonSerializer.Serialize(Path.Combine(root, "pipe.dbc"))},"signals":["Wheel_Speeds.FL"]}}"""
                            (Path.Combine(root, "real.rlog.zst")))

                Expect.stringContains dbc "named pipe (FIFO)" "a FIFO as the DBC"
            }))
        testCaseTask "a run's error and log name the upload, never a server path" (fun () ->
            withRuns [] 1 (fun svc client -> task {
                let log =
                    Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "default.rlog.zst")

                let bytes = File.ReadAllBytes log

                let runOn (content: byte array) = task {
                    let! uploaded = upload client "application/octet-stream" content
                    Expect.equal uploaded.StatusCode HttpStatusCode.Created "uploaded"
                    let! u = EndpointTests.parse uploaded
                    let id = u.GetProperty("upload_id").GetString()

                    let body =
                        $"""{{"tool_id":"log-summary","input":{{"type":"upload","value":"{id}"}}}}"""

                    let! created = post client body None
                    let! c = EndpointTests.parse created
                    let runId = c.GetProperty("run_id").GetString()
                    let! final = waitTerminal client runId
                    let! logs = client.GetStringAsync($"/v1/runs/{runId}/logs?format=json")
                    return id, final, logs
                }

                let clean (what: string) (text: string) =
                    Expect.isFalse (text.Contains svc.Config.DataDir) $"{what} shows no data dir: {text}"
                    Expect.isFalse (text.Contains "/uploads/") $"{what} shows no upload path"

                // Cut short: read up to the damage, which is a warning in the run's log.
                let! cutId, cutRun, cutLogs = runOn bytes[.. bytes.Length / 3]
                Expect.equal (cutRun.GetProperty("status").GetString()) "completed" "tolerated damage"
                clean "the log" cutLogs
                Expect.stringContains cutLogs $"upload {cutId}" "the warning names the upload"

                // A zstd header and garbage: no event at all, so the run fails naming the upload.
                let garbage = Array.append bytes[..3] (Array.create 256 0xEEuy)
                let! badId, badRun, badLogs = runOn garbage
                Expect.equal (badRun.GetProperty("status").GetString()) "failed" "no event"
                let error = badRun.GetProperty("error").GetString()
                clean "the error" error
                clean "the log" badLogs
                Expect.stringContains error $"upload {badId}" "the error names the upload"
            }))
        test "ServerPaths shows uploads, input roots and the data dir without their server paths" {
            let config = {
                EndpointTests.configFor "/srv/cts/data" with
                    InputRoots = [ "/mnt/drives" ]
            }

            let id = "0d9b7f7e-2a6b-4f0e-9a51-0c2f1e3d4b5a"
            Expect.equal (ServerPaths(config).Show $"/srv/cts/data/uploads/{id}") $"upload {id}" "an upload"
            Expect.equal (ServerPaths(config).Show "/mnt/drives/car/rlog.zst") "car/rlog.zst" "under a root"
            Expect.equal (ServerPaths(config).Show "/srv/cts/data/runs/x/a.csv") "runs/x/a.csv" "in the data dir"
            Expect.equal (ServerPaths(config).Show "/etc/passwd") "passwd" "elsewhere: the name only"

            Expect.equal
                (ServerPaths(config).Mask $"/srv/cts/data/uploads/{id}: byte 12: truncated; see /mnt/drives/a/b")
                $"upload {id}: byte 12: truncated; see a/b"
                "in a text"
        }
    ]

/// A file that takes `room` bytes and then fails as a full disk does (ENOSPC).
type private FillingFile(path: string, room: int64) =
    inherit Stream()
    let file = new FileStream(path, FileMode.CreateNew, FileAccess.Write)
    let mutable written = 0L

    override _.CanRead = false
    override _.CanSeek = false
    override _.CanWrite = true
    override _.Length = written

    override _.Position
        with get () = written
        and set _ = raise (NotSupportedException())

    override _.Flush() = file.Flush()
    override _.Read(_, _, _) = raise (NotSupportedException())
    override _.Seek(_, _) = raise (NotSupportedException())
    override _.SetLength _ = raise (NotSupportedException())

    override _.Write(buffer: byte array, offset: int, count: int) =
        if written + int64 count > room then
            raise (IOException("No space left on device", 28))

        file.Write(buffer, offset, count)
        written <- written + int64 count

    override this.WriteAsync(buffer: byte array, offset: int, count: int, _: Threading.CancellationToken) =
        this.Write(buffer, offset, count)
        Threading.Tasks.Task.CompletedTask

    override _.Dispose(disposing: bool) =
        if disposing then
            file.Dispose()

        base.Dispose disposing

let private storage =
    testList "failing storage" [
        testCaseTask "a full disk answers an upload 507 and keeps nothing of it" (fun () -> task {
            let dataDir = TestEnv.tempDir "full"
            let store = EndpointTests.openStore dataDir

            let context = {
                Startup.createContext (EndpointTests.configFor dataDir) store TimeProvider.System with
                    CreateFile = fun path -> new FillingFile(path, 100_000L)
            }

            use host = EndpointTests.startHost context Startup.configureApp
            use client = host.GetTestClient()

            let log =
                Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "default.rlog.zst")

            let! response = upload client "application/octet-stream" (File.ReadAllBytes log)
            let! problem = EndpointTests.expectProblem response 507
            Expect.stringContains (problem.GetProperty("detail").GetString()) "disk is full" "says why"
            Expect.isFalse ((problem.GetProperty("detail").GetString()).Contains dataDir) "no server path"
            Expect.isEmpty (Directory.GetFiles(Path.Combine(dataDir, "uploads"))) "nothing partial kept"

            // What fits still goes in.
            let bytes = File.ReadAllBytes log
            let! small = upload client "application/octet-stream" bytes[..50_000]

            Expect.equal small.StatusCode HttpStatusCode.Created "a smaller upload fits"
            do! host.StopAsync()
            store.Dispose()
        })
    ]

/// A request body that the test drives: each read returns `chunk` bytes (a zstd frame's magic
/// first) and then runs `afterRead`, or, with `stall`, waits until the server gives up on it.
type private DrivenBody(chunk: int, stall: int -> bool, afterRead: unit -> unit) =
    inherit Stream()
    let mutable reads = 0

    override _.CanRead = true
    override _.CanSeek = false
    override _.CanWrite = false
    override _.Length = raise (NotSupportedException())

    override _.Position
        with get () = 0L
        and set _ = raise (NotSupportedException())

    override _.Flush() = ()
    override _.Seek(_, _) = raise (NotSupportedException())
    override _.SetLength _ = raise (NotSupportedException())
    override _.Write(_, _, _) = raise (NotSupportedException())

    override this.Read(buffer, offset, count) =
        this.ReadAsync(buffer, offset, count).Result

    override _.ReadAsync(buffer: byte array, offset: int, count: int, token: Threading.CancellationToken) = task {
        token.ThrowIfCancellationRequested()
        reads <- reads + 1

        if stall reads then
            do! Threading.Tasks.Task.Delay(Threading.Timeout.Infinite, token)

        let n = min count chunk

        for i in 0 .. n - 1 do
            buffer[offset + i] <- [| 0x28uy; 0xB5uy; 0x2Fuy; 0xFDuy |].[i % 4]

        afterRead ()
        return n
    }

/// A service on a fake clock; uploads are sent from a chosen address with a driven body.
let private withClockedServer
    (change: ServiceConfig -> ServiceConfig)
    (f: TestServer -> FakeTimeProvider -> Threading.Tasks.Task<unit>)
    = task {
    let dataDir = TestEnv.tempDir "slow"
    let store = EndpointTests.openStore dataDir
    let clock = FakeTimeProvider(DateTimeOffset(2026, 12, 1, 12, 0, 0, TimeSpan.Zero))

    let context =
        Startup.createContext (change (EndpointTests.configFor dataDir)) store clock

    use host = EndpointTests.startHost context Startup.configureApp
    do! f (host.GetTestServer()) clock
    do! host.StopAsync()
    store.Dispose()
}

let private sendUpload (server: TestServer) (address: string) (body: Stream) =
    server.SendAsync(fun ctx ->
        ctx.Request.Method <- "POST"
        ctx.Request.Path <- Microsoft.AspNetCore.Http.PathString "/v1/uploads"
        ctx.Request.ContentType <- "application/octet-stream"
        ctx.Connection.RemoteIpAddress <- IPAddress.Parse address
        ctx.Request.Body <- body)

let private detailOf (ctx: Microsoft.AspNetCore.Http.HttpContext) =
    use reader = new StreamReader(ctx.Response.Body)
    reader.ReadToEnd()

let private slowSenders =
    testList "slow senders" [
        testCaseTask "one caller's uploads are limited; others still get in" (fun () ->
            withClockedServer (fun c -> { c with MaxUploadsPerCaller = 1 }) (fun server clock -> task {
                // Caller A's first upload sends a little, then waits.
                let first =
                    sendUpload server "192.0.2.1" (new DrivenBody(1024, (fun n -> n = 2), ignore))

                do! Threading.Tasks.Task.Delay 200

                let! second =
                    sendUpload server "192.0.2.1" (new DrivenBody(1024, (fun n -> n > 3), ignore))

                Expect.equal second.Response.StatusCode 429 "the same caller waits for its first upload"
                Expect.stringContains (detailOf second) "max_uploads_per_caller" "says which limit"

                // Another caller is not held up (its body ends after three reads).
                let zstdLike =
                    Array.init 3000 (fun i -> [| 0x28uy; 0xB5uy; 0x2Fuy; 0xFDuy |].[i % 4])

                let! other = sendUpload server "192.0.2.2" (new MemoryStream(zstdLike))
                Expect.notEqual other.Response.StatusCode 429 "another caller gets a slot"

                // The held upload stalls past the idle limit and ends; its slot comes back.
                clock.Advance(TimeSpan.FromSeconds 31.0)
                let! held = first
                Expect.equal held.Response.StatusCode 408 "the stalled one ends"
                let! again = sendUpload server "192.0.2.1" (new MemoryStream(zstdLike))
                Expect.notEqual again.Response.StatusCode 429 "the caller's slot was given back"
            }))
        testCaseTask "a sender that stalls, trickles or runs past the deadline gets 408, nothing kept" (fun () ->
            withClockedServer
                (fun c -> {
                    c with
                        UploadMinBytesPerSecond = 4096
                        UploadTimeout = TimeSpan.FromSeconds 60.0
                })
                (fun server clock -> task {
                    // Stalls after its first read; the clock moves past the idle limit.
                    let stalled =
                        sendUpload server "198.51.100.1" (new DrivenBody(1024, (fun n -> n = 2), ignore))

                    do! Threading.Tasks.Task.Delay 200
                    clock.Advance(TimeSpan.FromSeconds 31.0)
                    let! s = stalled
                    Expect.equal s.Response.StatusCode 408 "stalled"
                    Expect.stringContains (detailOf s) "nothing arrived for 30 s" "says why"

                    // 300 bytes a second, the reproduction's rate.
                    let trickle =
                        new DrivenBody(300, (fun _ -> false), (fun () -> clock.Advance(TimeSpan.FromSeconds 1.0)))

                    let! t = sendUpload server "198.51.100.2" trickle
                    Expect.equal t.Response.StatusCode 408 "trickling"
                    Expect.stringContains (detailOf t) "upload_min_bytes_per_second" "says which limit"

                    // Fast enough, but for longer than the deadline.
                    let long =
                        new DrivenBody(16_384, (fun _ -> false), (fun () -> clock.Advance(TimeSpan.FromSeconds 2.0)))

                    let! l = sendUpload server "198.51.100.3" long
                    Expect.equal l.Response.StatusCode 408 "past the deadline"
                    Expect.stringContains (detailOf l) "upload_timeout_s" "says which limit"
                }))
    ]

let private streams =
    testList "log streams" [
        testCaseTask "log streams are limited per caller and in total; a closed one gives its slot back" (fun () ->
            withConfig
                []
                1
                (fun c -> {
                    c with
                        MaxSseStreamsPerCaller = 2
                        MaxSseStreams = 3
                })
                (fun svc client -> task {
                    // A run a live worker elsewhere holds for an hour: its streams stay open.
                    let run =
                        RunRecord.queued
                            "log-summary"
                            "{}"
                            (CtsLite.InputRef.Path "synthetic/default.rlog.zst")
                            None
                            DateTimeOffset.UtcNow

                    let! _ = svc.Runs.CreateRun(run, None, 1000)
                    let now = DateTimeOffset.UtcNow
                    let! _ = svc.Runs.ClaimNext("elsewhere", now, now.AddHours 1.0)

                    let openStream () =
                        client.GetAsync($"/v1/runs/{run.RunId}/logs", HttpCompletionOption.ResponseHeadersRead)

                    let! first = openStream ()
                    let! second = openStream ()
                    Expect.equal (int first.StatusCode, int second.StatusCode) (200, 200) "two streams"
                    let! third = openStream ()
                    let! p = EndpointTests.expectProblem third 429

                    Expect.stringContains
                        (p.GetProperty("detail").GetString())
                        "max_sse_streams_per_caller"
                        "per caller"

                    first.Dispose()

                    // The server notices the closed stream at its next write (within a poll or two).
                    let mutable again = None
                    let deadline = DateTime.UtcNow.AddSeconds 10.0

                    while again.IsNone && DateTime.UtcNow < deadline do
                        let! r = openStream ()

                        if r.StatusCode = HttpStatusCode.OK then
                            again <- Some r
                        else
                            r.Dispose()
                            do! Threading.Tasks.Task.Delay 100

                    Expect.isSome again "a closed stream gives its slot back"
                    second.Dispose()
                    again |> Option.iter (fun r -> r.Dispose())
                }))
    ]

let all =
    testList "hostile clients" [ multipart; bounded; paths; storage; slowSenders; streams ]
