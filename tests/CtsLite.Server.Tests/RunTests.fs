/// Runs through the API, in process (TestHost) with the real engine: lifecycle against a local run,
/// validation, input confinement, idempotency, cancellation, SSE resume, lease recovery.
module CtsLite.Server.Tests.RunTests

open System
open System.IO
open System.Net
open System.Net.Http
open System.Text
open System.Text.Json
open System.Threading
open System.Threading.Tasks
open Microsoft.AspNetCore.TestHost
open Microsoft.Extensions.Hosting
open Expecto
open CtsLite
open CtsLite.Server
open CtsLite.Tools
open CtsLite.Tests

let rlogs () =
    Path.Combine(TestEnv.sharedDir (), "data", "rlogs")

let routeName = "5ca1ab1e5ca1ab1e|2025-01-16--07-45-12"

/// A service on the clock `time`, with the shared rlogs (and any extra folders) as input roots, its
/// config changed by `change`.
let withClock
    (time: TimeProvider)
    (extraRoots: string list)
    (maxRuns: int)
    (change: ServiceConfig -> ServiceConfig)
    (f: ServiceContext -> HttpClient -> Task<unit>)
    : Task<unit> = task {
    let dataDir = TestEnv.tempDir "runs"
    let store = EndpointTests.openStore dataDir

    let config =
        change {
            EndpointTests.configFor dataDir with
                InputRoots = rlogs () :: extraRoots
                MaxConcurrentRuns = maxRuns
        }

    let context = Startup.createContext config store time
    use host = EndpointTests.startHost context Startup.configureApp
    use client = host.GetTestClient()
    client.Timeout <- TimeSpan.FromMinutes 3.0
    do! f context client
    do! host.StopAsync()
    store.Dispose()
}

/// A service with the shared rlogs (and any extra folders) as input roots, its config changed by `change`.
let withConfig extraRoots maxRuns change f =
    withClock TimeProvider.System extraRoots maxRuns change f

/// A service with the shared rlogs (and any extra folders) as input roots.
let withRuns (extraRoots: string list) (maxRuns: int) (f: ServiceContext -> HttpClient -> Task<unit>) : Task<unit> =
    withConfig extraRoots maxRuns id f

let post (client: HttpClient) (body: string) (key: string option) = task {
    use request = new HttpRequestMessage(HttpMethod.Post, "/v1/runs")
    request.Content <- new StringContent(body, Encoding.UTF8, "application/json")

    match key with
    | Some k -> request.Headers.Add("Idempotency-Key", k)
    | None -> ()

    return! client.SendAsync request
}

let runBody (tool: string) (parameters: string) (input: string) =
    $"""{{"tool_id":"{tool}","params":{parameters},"input":{{"type":"path","value":{JsonSerializer.Serialize input}}},"name":"test"}}"""

let getJson (client: HttpClient) (url: string) = task {
    let! response = client.GetAsync(url: string)
    Expect.equal response.StatusCode HttpStatusCode.OK url
    return! EndpointTests.parse response
}

/// Polls the run until it is terminal (or 120 s pass).
let waitTerminal (client: HttpClient) (runId: string) = task {
    let deadline = DateTime.UtcNow.AddMinutes 2.0
    let mutable result = None

    while result.IsNone do
        let! run = getJson client $"/v1/runs/{runId}"
        let status = run.GetProperty("status").GetString()

        if status = "completed" || status = "failed" || status = "canceled" then
            result <- Some run
        elif DateTime.UtcNow > deadline then
            failtestf "run %s still %s after 2 minutes" runId status
        else
            do! Task.Delay 50

    return result.Value
}

/// Reads a whole SSE stream: (id, event, data) triples, until the server ends it.
let readSse (client: HttpClient) (url: string) (lastEventId: string option) = task {
    use request = new HttpRequestMessage(HttpMethod.Get, (url: string))

    match lastEventId with
    | Some id -> request.Headers.Add("Last-Event-ID", id)
    | None -> ()

    use! response = client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead)
    Expect.equal response.Content.Headers.ContentType.MediaType "text/event-stream" "SSE media type"
    use! stream = response.Content.ReadAsStreamAsync()
    use reader = new StreamReader(stream)
    let events = ResizeArray<string * string * string>()
    let mutable id, event, data = "", "", ""
    let mutable line = ""
    let! first = reader.ReadLineAsync()
    line <- first

    while not (isNull line) do
        if line = "" then
            if event <> "" then
                events.Add((id, event, data))

            event <- ""
            data <- ""
        elif line.StartsWith "id: " then
            id <- line.Substring 4
        elif line.StartsWith "event: " then
            event <- line.Substring 7
        elif line.StartsWith "data: " then
            data <- line.Substring 6

        let! next = reader.ReadLineAsync()
        line <- next

    return List.ofSeq events
}

/// A local run of a tool through the one run path, for comparison with the service: its output
/// folder and output.
let localRunWith (toolId: string) (input: string) (given: (string * ParameterInput) list) =
    let dir = TestEnv.tempDir "local"

    match
        ToolRunner.run {
            ToolRunner.request toolId (ToolInput.Path input) given dir with
                ResolveFile = Ok
        }
    with
    | Ok run -> dir, run.Output
    | Error e -> failtestf "local run of %s: %A" toolId e

/// `localRunWith` with text parameters; the output folder.
let localRun (toolId: string) (input: string) (given: (string * string) list) =
    localRunWith toolId input (given |> List.map (fun (k, v) -> k, ParameterInput.Text v))
    |> fst

/// A file's text with what differs between two runs masked: ids, times of generation, paths.
let masked (text: string) =
    let t =
        RegularExpressions.Regex.Replace(text, "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>")

    let t =
        RegularExpressions.Regex.Replace(t, @"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}[^""<,\s]*", "<time>")

    // The service shows a path under its input root relative to the root (as the client named it).
    t.Replace(rlogs () + "/", "")

let upload (client: HttpClient) (bytes: byte array) (name: string) = task {
    use content = new ByteArrayContent(bytes)
    content.Headers.ContentType <- Headers.MediaTypeHeaderValue "application/octet-stream"
    content.Headers.Add("X-Filename", name)
    return! client.PostAsync("/v1/uploads", content)
}

let uploads =
    testList "uploads" [
        testCaseTask "an rlog is streamed, hashed, deduplicated, runnable by id, and deleted" (fun () ->
            withRuns [] 1 (fun svc client -> task {
                let path = Path.Combine(rlogs (), "synthetic", "default.rlog.zst")
                let bytes = File.ReadAllBytes path
                let! first = upload client bytes "../../evil/default.rlog.zst"
                Expect.equal first.StatusCode HttpStatusCode.Created "201"
                let! u = EndpointTests.parse first
                let id = u.GetProperty("upload_id").GetString()

                Expect.equal
                    (u.GetProperty("filename").GetString())
                    "default.rlog.zst"
                    "the name is reduced to its last part"

                Expect.equal (u.GetProperty("size").GetInt64()) bytes.LongLength "size"

                Expect.equal
                    (u.GetProperty("sha256").GetString())
                    (Convert.ToHexString(Security.Cryptography.SHA256.HashData bytes).ToLowerInvariant())
                    "sha256"

                Expect.equal (u.GetProperty("content_type").GetString()) "rlog" "kind by content"

                let! again = upload client bytes "other-name.zst"
                Expect.equal again.StatusCode HttpStatusCode.OK "200 for known content"
                let! u2 = EndpointTests.parse again
                Expect.equal (u2.GetProperty("upload_id").GetString()) id "the same upload"

                let body =
                    $"""{{"tool_id":"log-summary","params":{{}},"input":{{"type":"upload","value":"{id}"}}}}"""

                let! response = post client body None
                let! run = EndpointTests.parse response
                let! final = waitTerminal client (run.GetProperty("run_id").GetString())
                Expect.equal (final.GetProperty("status").GetString()) "completed" "run on the upload"
                let input = final.GetProperty "input"
                Expect.equal (input.GetProperty("type").GetString()) "upload" "the run says what it read"
                Expect.equal (input.GetProperty("value").GetString()) id "which upload"

                Expect.equal
                    [ for n in input.GetProperty("filenames").EnumerateArray() -> n.GetString() ]
                    [ "default.rlog.zst" ]
                    "by the name it was uploaded as"

                let! deleted = client.DeleteAsync $"/v1/uploads/{id}"
                Expect.equal deleted.StatusCode HttpStatusCode.NoContent "204"
                let! gone = client.GetAsync $"/v1/uploads/{id}"
                let! _ = EndpointTests.expectProblem gone 404
                let leftovers = Directory.GetFiles(Path.Combine(svc.Config.DataDir, "uploads"))
                Expect.isEmpty leftovers "no file left behind"

                let! after =
                    client.GetStringAsync $"""/v1/runs/{run.GetProperty("run_id").GetString()}"""

                let kept =
                    JsonDocument.Parse(after).RootElement.GetProperty("input").GetProperty("filenames")

                Expect.equal
                    (kept[0].GetString())
                    "default.rlog.zst"
                    "the run keeps the name after the upload is gone"
            }))
        testCaseTask
            "several uploads are one time line: a route's segments uploaded one by one give the route's findings"
            (fun () ->
                withRuns [] 1 (fun _ client -> task {
                    let route = Path.Combine(rlogs (), "synthetic", "route")

                    let ids = ResizeArray<string>()

                    for n in 0..2 do
                        let path = Path.Combine(route, $"{routeName}--{n}", "rlog.zst")
                        let! response = upload client (File.ReadAllBytes path) "rlog.zst"
                        let! u = EndpointTests.parse response
                        ids.Add(u.GetProperty("upload_id").GetString())

                    let value = JsonSerializer.Serialize ids

                    let body =
                        $"""{{"tool_id":"cruise-control-analyzer","params":{{}},"input":{{"type":"uploads","value":{value}}}}}"""

                    let! response = post client body None
                    Expect.equal response.StatusCode HttpStatusCode.Accepted "202"
                    let! run = EndpointTests.parse response
                    let runId = run.GetProperty("run_id").GetString()
                    let! final = waitTerminal client runId
                    Expect.equal (final.GetProperty("status").GetString()) "completed" "completed"
                    let! artifacts = getJson client $"/v1/runs/{runId}/artifacts"

                    let summary =
                        artifacts.GetProperty("artifacts").EnumerateArray()
                        |> Seq.find (fun a -> a.GetProperty("filename").GetString() = "summary.json")

                    let! served = client.GetStringAsync(summary.GetProperty("download_url").GetString())
                    let local = localRun "cruise-control-analyzer" (Path.Combine(route, routeName)) []

                    let expected =
                        JsonDocument.Parse(File.ReadAllText(Path.Combine(local, "summary.json"))).RootElement

                    let actual = JsonDocument.Parse(served).RootElement

                    for key in [ "set_presses"; "resume_presses"; "main_presses"; "target_speed_events" ] do
                        Expect.equal
                            (actual.GetProperty(key).GetRawText())
                            (expected.GetProperty(key).GetRawText())
                            $"{key} as for the route"

                    // Every upload of the list counts as used; a bad list is refused with a pointer.
                    let bad (input: string) =
                        $"""{{"tool_id":"log-summary","input":{input}}}"""

                    for input, status, pointer in
                        [
                            """{"type":"uploads","value":[]}""", 422, "/input/value"
                            """{"type":"uploads","value":["ok",1]}""", 422, "/input/value/1"
                            """{"type":"upload","value":["x"]}""", 422, "/input/value"
                            """{"type":"folder","value":"x"}""", 422, "/input/type"
                        ] do
                        let! response = post client (bad input) None
                        let! p = EndpointTests.expectProblem response status

                        Expect.equal
                            (p.GetProperty("errors").Item(0).GetProperty("pointer").GetString())
                            pointer
                            input

                    let! unknown =
                        post client (bad $"""{{"type":"uploads","value":["{ids[0]}","nope"]}}""") None

                    let! p = EndpointTests.expectProblem unknown 400

                    Expect.stringContains
                        (p.GetProperty("detail").GetString())
                        "no upload 'nope'"
                        "names the missing one"

                    let severalBody =
                        $"""{{"tool_id":"log-summary","inputs":[{{"type":"upload","value":"{ids[0]}"}}]}}"""

                    let! several = post client severalBody None
                    let! p = EndpointTests.expectProblem several 422

                    Expect.equal
                        (p.GetProperty("errors").Item(0).GetProperty("pointer").GetString())
                        "/inputs"
                        "one-input tools refuse inputs"
                }))
        testCaseTask "multipart: a DBC upload used as the analyzer's dbc parameter" (fun () ->
            withRuns [] 1 (fun _ client -> task {
                let dbc = TestEnv.generatedDbc "subaru_global_2017_generated.dbc"

                use form = new MultipartFormDataContent()
                form.Add(new ByteArrayContent(File.ReadAllBytes dbc), "file", "subaru.dbc")
                let! response = client.PostAsync("/v1/uploads", form)
                Expect.equal response.StatusCode HttpStatusCode.Created "201"
                let! u = EndpointTests.parse response
                Expect.equal (u.GetProperty("content_type").GetString()) "dbc" "a DBC"
                Expect.equal (u.GetProperty("filename").GetString()) "subaru.dbc" "name from the part"
                let dbcId = u.GetProperty("upload_id").GetString()

                let! run =
                    post
                        client
                        (runBody "cruise-control-analyzer" $"""{{"dbc":"{dbcId}"}}""" "synthetic/default.rlog.zst")
                        None

                Expect.equal run.StatusCode HttpStatusCode.Accepted "accepted"
                let! r = EndpointTests.parse run
                let! final = waitTerminal client (r.GetProperty("run_id").GetString())
                Expect.equal (final.GetProperty("status").GetString()) "completed" "ran with the uploaded DBC"
            }))
        testCaseTask "415 for content that is no log, CSV or DBC; 413 over the limit; nothing kept" (fun () ->
            withConfig [] 1 (fun c -> { c with MaxUploadBytes = 4096L }) (fun svc client -> task {
                let png =
                    Array.append
                        [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 0x0Duy; 0x0Auy; 0x1Auy; 0x0Auy |]
                        (Array.create 100 0xFFuy)

                let! refused = upload client png "picture.rlog"
                let! _ = EndpointTests.expectProblem refused 415

                let big = Array.append [| 0x28uy; 0xB5uy; 0x2Fuy; 0xFDuy |] (Array.zeroCreate 10000)
                let! tooBig = upload client big "big.zst"
                let! _ = EndpointTests.expectProblem tooBig 413

                // Without a Content-Length the limit is found while streaming.
                use chunked = new StreamContent(new MemoryStream(big))
                chunked.Headers.Add("X-Filename", "big.zst")

                use request =
                    new HttpRequestMessage(HttpMethod.Post, "/v1/uploads", Content = chunked)

                request.Headers.TransferEncodingChunked <- true
                let! streamed = client.SendAsync request
                let! _ = EndpointTests.expectProblem streamed 413

                let dir = Path.Combine(svc.Config.DataDir, "uploads")

                let files =
                    if Directory.Exists dir then
                        Directory.GetFiles dir
                    else
                        [||]

                Expect.isEmpty files "nothing stored, no partial file"
            }))
    ]


let all =
    testList "runs" [
        testCaseTask "lifecycle: run, follow SSE to end, download every artifact, equal to a local run" (fun () ->
            withRuns [] 2 (fun _ client -> task {
                let! response =
                    post
                        client
                        (runBody "cruise-control-analyzer" """{"speed_min":55}""" "synthetic/default.rlog.zst")
                        None

                Expect.equal response.StatusCode HttpStatusCode.Accepted "202"
                let! created = EndpointTests.parse response
                let runId = created.GetProperty("run_id").GetString()
                Expect.equal (response.Headers.Location.ToString()) $"/v1/runs/{runId}" "Location"

                Expect.equal
                    (created.GetProperty("params").GetProperty("speed_max").GetDouble())
                    56.0
                    "params after coercion"

                let! events = readSse client $"/v1/runs/{runId}/logs" None
                let _, lastEvent, lastData = List.last events
                Expect.equal lastEvent "end" "the stream ends with end"
                let final = JsonDocument.Parse(lastData).RootElement
                Expect.equal (final.GetProperty("status").GetString()) "completed" "completed"

                let logIds =
                    events
                    |> List.filter (fun (_, e, _) -> e = "log")
                    |> List.map (fun (i, _, _) -> int64 i)

                Expect.equal logIds [ 1L .. int64 logIds.Length ] "every log line once, in order"

                let! artifacts = getJson client $"/v1/runs/{runId}/artifacts"

                let local =
                    localRun "cruise-control-analyzer" (Path.Combine(rlogs (), "synthetic", "default.rlog.zst")) [
                        "speed_min", "55"
                    ]

                let list = artifacts.GetProperty("artifacts").EnumerateArray() |> List.ofSeq
                Expect.equal list.Length (final.GetProperty("artifacts").GetArrayLength()) "run lists its artifacts"

                for a in list do
                    let name = a.GetProperty("filename").GetString()
                    let! bytes = client.GetByteArrayAsync(a.GetProperty("download_url").GetString())
                    Expect.equal (int64 bytes.Length) (a.GetProperty("size").GetInt64()) $"{name} size"

                    Expect.equal
                        (Convert.ToHexString(Security.Cryptography.SHA256.HashData bytes).ToLowerInvariant())
                        (a.GetProperty("sha256").GetString())
                        $"{name} sha256"

                    let text = Encoding.UTF8.GetString bytes
                    Expect.isFalse (text.Contains(rlogs ())) $"{name}: no server path"
                    let ours = masked text
                    let theirs = masked (File.ReadAllText(Path.Combine(local, name)))
                    Expect.equal ours theirs $"{name} equals the local run"
            }))
        testCaseTask "downloads: Content-Disposition, ETag, If-None-Match 304, Range 206" (fun () ->
            withRuns [] 1 (fun _ client -> task {
                let! response =
                    post client (runBody "log-summary" "{}" "synthetic/default.rlog.zst") None

                let! created = EndpointTests.parse response
                let runId = created.GetProperty("run_id").GetString()
                let! _ = waitTerminal client runId
                let! artifacts = getJson client $"/v1/artifacts?run_id={runId}"
                let a = artifacts.GetProperty("artifacts").Item(0)
                let url = a.GetProperty("download_url").GetString()
                let! full = client.GetAsync(url: string)
                Expect.equal full.StatusCode HttpStatusCode.OK "200"

                Expect.stringContains
                    (full.Content.Headers.ContentDisposition.ToString())
                    "log_summary.json"
                    "file name"

                let etag = full.Headers.ETag
                let sha = a.GetProperty("sha256").GetString()
                Expect.equal etag.Tag ("\"" + sha + "\"") "ETag is the sha256"

                use conditional = new HttpRequestMessage(HttpMethod.Get, url)
                conditional.Headers.IfNoneMatch.Add etag
                let! notModified = client.SendAsync conditional
                Expect.equal notModified.StatusCode HttpStatusCode.NotModified "304"

                use ranged = new HttpRequestMessage(HttpMethod.Get, url)
                ranged.Headers.Range <- Headers.RangeHeaderValue(10L, 19L)
                let! part = client.SendAsync ranged
                Expect.equal part.StatusCode HttpStatusCode.PartialContent "206"
                let! partBytes = part.Content.ReadAsByteArrayAsync()
                let! fullBytes = full.Content.ReadAsByteArrayAsync()
                Expect.equal partBytes fullBytes[10..19] "the requested bytes"

                // Untrusted content on the service's origin: sandboxed, never sniffed.
                Expect.stringContains
                    (full.Headers.GetValues("Content-Security-Policy") |> Seq.head)
                    "sandbox"
                    "CSP sandbox"

                Expect.equal (full.Headers.GetValues("X-Content-Type-Options") |> Seq.head) "nosniff" "nosniff"
                Expect.equal full.Content.Headers.ContentDisposition.DispositionType "attachment" "JSON: a download"

                let html =
                    artifacts.GetProperty("artifacts").EnumerateArray()
                    |> Seq.find (fun x -> x.GetProperty("filename").GetString().EndsWith ".html")

                let htmlUrl = html.GetProperty("download_url").GetString()
                let! shown = client.GetAsync(htmlUrl: string)

                Expect.equal
                    shown.Content.Headers.ContentDisposition.DispositionType
                    "inline"
                    "the report opens in the browser"

                Expect.equal shown.Content.Headers.ContentDisposition.FileName "log_summary.html" "with its name"

                Expect.stringContains
                    (shown.Headers.GetValues("Content-Security-Policy") |> Seq.head)
                    "sandbox"
                    "sandboxed"

                let! saved = client.GetAsync(htmlUrl + "?download=1")

                Expect.equal
                    saved.Content.Headers.ContentDisposition.DispositionType
                    "attachment"
                    "?download=1 saves it"

                let! missing = client.GetAsync "/v1/artifacts/nope/download"
                let! _ = EndpointTests.expectProblem missing 404
                ()
            }))
        testCaseTask "validation: 404 unknown tool, 422 with one pointer per bad parameter" (fun () ->
            withRuns [] 1 (fun _ client -> task {
                let! unknown =
                    post client (runBody "no-such-tool" "{}" "synthetic/default.rlog.zst") None

                let! p = EndpointTests.expectProblem unknown 404
                Expect.stringContains (p.GetProperty("detail").GetString()) "cruise-control-analyzer" "lists tools"

                let! bad =
                    post
                        client
                        (runBody
                            "cruise-control-analyzer"
                            """{"speed_min":"fast","marker_pre":-1,"nope":1}"""
                            "synthetic/default.rlog.zst")
                        None

                let! p = EndpointTests.expectProblem bad 422

                let pointers =
                    p.GetProperty("errors").EnumerateArray()
                    |> Seq.map (fun e -> e.GetProperty("pointer").GetString())
                    |> Seq.sort
                    |> List.ofSeq

                Expect.equal
                    pointers
                    [ "/params/marker_pre"; "/params/nope"; "/params/speed_min" ]
                    "one per parameter"

                let! noInput = post client """{"tool_id":"log-summary"}""" None
                let! p = EndpointTests.expectProblem noInput 422

                Expect.equal
                    (p.GetProperty("errors").Item(0).GetProperty("pointer").GetString())
                    "/input"
                    "input required"
            }))
        test "a root reached through a link holds the files linked into it from another root" {
            // /real/seg.zst, /linked -> /real (a root configured through a link), and a route in
            // another root whose segment links to /linked/seg.zst: inside, once every link is followed.
            let base' = TestEnv.tempDir "linkedroot"
            let real = Directory.CreateDirectory(Path.Combine(base', "real")).FullName
            let segmentFile = Path.Combine(real, "rlog.zst")

            File.Copy(Path.Combine(rlogs (), "synthetic", "route", $"{routeName}--0", "rlog.zst"), segmentFile)

            let linked = Path.Combine(base', "linked")
            Directory.CreateSymbolicLink(linked, real) |> ignore
            let other = Directory.CreateDirectory(Path.Combine(base', "other")).FullName

            let segment =
                Directory.CreateDirectory(Path.Combine(other, $"{routeName}--0")).FullName

            File.CreateSymbolicLink(Path.Combine(segment, "rlog.zst"), Path.Combine(linked, "rlog.zst"))
            |> ignore

            let route = Path.Combine(other, routeName)
            Expect.isOk (InputPaths.resolve [ other; linked ] route) "inside: the link's target is under a root"

            Expect.stringContains
                (InputPaths.resolve [ other ] route |> Result.defaultWith id)
                "leads outside the input roots"
                "without that root, still outside"
        }
        testCaseTask "inputs stay inside the roots: '..', absolute escapes, symlinks out, NUL, missing" (fun () ->
            let root = TestEnv.tempDir "root"

            File.CreateSymbolicLink(Path.Combine(root, "escape.zst"), "/etc/hostname")
            |> ignore

            Directory.CreateSymbolicLink(Path.Combine(root, "etc"), "/etc") |> ignore
            // A route whose segment folder holds a link to a log outside the roots.
            let outside = TestEnv.tempDir "outside"
            File.Copy(Path.Combine(rlogs (), "synthetic", "default.rlog.zst"), Path.Combine(outside, "rlog.zst"))
            let segment = Directory.CreateDirectory(Path.Combine(root, $"{routeName}--0"))

            File.CreateSymbolicLink(Path.Combine(segment.FullName, "rlog.zst"), Path.Combine(outside, "rlog.zst"))
            |> ignore

            withRuns [ root ] 1 (fun _ client -> task {
                for value, expected in
                    [
                        "../synthetic/default.rlog.zst", "'..'"
                        "/etc/hostname", "outside the input roots"
                        "escape.zst", "outside the input roots"
                        "etc/hostname", "outside the input roots"
                        "synthetic/default.rlog.zst\u0000x", "NUL"
                        "synthetic/nothing.zst", "does not exist"
                        routeName, "leads outside the input roots"
                        $"{routeName}--0", "leads outside the input roots"
                    ] do
                    let! response = post client (runBody "log-summary" "{}" value) None
                    let! p = EndpointTests.expectProblem response 400
                    Expect.stringContains (p.GetProperty("detail").GetString()) expected value

                let! dbcOutside =
                    post
                        client
                        (runBody "cruise-control-analyzer" """{"dbc":"/etc/hostname"}""" "synthetic/default.rlog.zst")
                        None

                let! p = EndpointTests.expectProblem dbcOutside 422

                Expect.equal
                    (p.GetProperty("errors").Item(0).GetProperty("pointer").GetString())
                    "/params/dbc"
                    "file parameters too"
            }))
        testCaseTask "Idempotency-Key: same body gives the same run, another body 409" (fun () ->
            withRuns [] 1 (fun _ client -> task {
                let body = runBody "log-summary" "{}" "synthetic/default.rlog.zst"
                let! first = post client body (Some "key-1")
                let! firstRun = EndpointTests.parse first
                let! second = post client body (Some "key-1")
                Expect.equal second.StatusCode HttpStatusCode.Accepted "202 again"
                let! secondRun = EndpointTests.parse second

                Expect.equal
                    (secondRun.GetProperty("run_id").GetString())
                    (firstRun.GetProperty("run_id").GetString())
                    "same run"

                let! other =
                    post client (runBody "rlog-to-csv" "{}" "synthetic/default.rlog.zst") (Some "key-1")

                let! _ = EndpointTests.expectProblem other 409
                let! list = getJson client "/v1/runs"
                Expect.equal (list.GetProperty("runs").GetArrayLength()) 1 "one run created"
            }))
        testCaseTask "cancel: a queued run at once, a running one stops its tool and stays canceled" (fun () ->
            // A long route: 40 segments, each a link to the same real segment.
            let root = TestEnv.tempDir "longroute"

            let segment =
                Path.Combine(rlogs (), "synthetic", "route", $"{routeName}--0", "rlog.zst")

            for n in 0..39 do
                let dir = Directory.CreateDirectory(Path.Combine(root, $"{routeName}--{n}"))

                File.CreateSymbolicLink(Path.Combine(dir.FullName, "rlog.zst"), segment)
                |> ignore

            withRuns [ root ] 1 (fun svc client -> task {
                let route = Path.Combine(root, routeName)
                let! first = post client (runBody "rlog-to-csv" "{}" route) None
                let! firstRun = EndpointTests.parse first
                let firstId = firstRun.GetProperty("run_id").GetString()
                let! second = post client (runBody "rlog-to-csv" "{}" route) None
                let! secondRun = EndpointTests.parse second
                let secondId = secondRun.GetProperty("run_id").GetString()

                // The second waits (one worker): canceling it is immediate.
                let! canceled = client.DeleteAsync $"/v1/runs/{secondId}"
                Expect.equal canceled.StatusCode HttpStatusCode.Accepted "202"
                let! c = EndpointTests.parse canceled
                Expect.equal (c.GetProperty("status").GetString()) "canceled" "queued → canceled"

                // Wait until the first is running, then cancel it.
                do!
                    TestEnv.waitUntil $"run {firstId} running" (TimeSpan.FromMinutes 1.0) (fun () -> task {
                        let! r = getJson client $"/v1/runs/{firstId}"
                        return r.GetProperty("status").GetString() = "running"
                    })

                let! _ = client.PostAsync($"/v1/runs/{firstId}/cancel", null)
                let! ended = waitTerminal client firstId
                Expect.equal (ended.GetProperty("status").GetString()) "canceled" "running → canceled"
                Expect.equal (ended.GetProperty("artifacts").GetArrayLength()) 0 "no artifacts"

                let outDir = Path.Combine(svc.Config.DataDir, "runs", firstId, "artifacts")

                Expect.isFalse
                    (File.Exists(Path.Combine(outDir, "can_frames.csv")))
                    "the half-written CSV never appears"

                let! logsBefore = getJson client $"/v1/runs/{firstId}/logs?format=json"
                do! Task.Delay 1500
                let! logsAfter = getJson client $"/v1/runs/{firstId}/logs?format=json"
                let! still = getJson client $"/v1/runs/{firstId}"
                Expect.equal (still.GetProperty("status").GetString()) "canceled" "stays canceled"

                Expect.equal
                    (logsAfter.GetProperty("entries").GetArrayLength())
                    (logsBefore.GetProperty("entries").GetArrayLength())
                    "no log line after the end: the tool stopped"

                let! again = client.PostAsync($"/v1/runs/{firstId}/cancel", null)
                let! _ = EndpointTests.expectProblem again 409
                ()
            }))
        testCaseTask "SSE: Last-Event-ID resumes after that line without duplicates or gaps" (fun () ->
            withRuns [] 1 (fun _ client -> task {
                let! response =
                    post client (runBody "cruise-control-analyzer" "{}" "synthetic/default.rlog.zst") None

                let! created = EndpointTests.parse response
                let runId = created.GetProperty("run_id").GetString()
                let! all = readSse client $"/v1/runs/{runId}/logs" None

                let ids =
                    all
                    |> List.filter (fun (_, e, _) -> e = "log")
                    |> List.map (fun (i, _, _) -> int64 i)

                Expect.isGreaterThan ids.Length 2 "several lines"
                let resumeAt = ids[1]
                let! rest = readSse client $"/v1/runs/{runId}/logs" (Some(string resumeAt))

                let restIds =
                    rest
                    |> List.filter (fun (_, e, _) -> e = "log")
                    |> List.map (fun (i, _, _) -> int64 i)

                Expect.equal restIds (ids |> List.filter (fun i -> i > resumeAt)) "exactly the later lines"
                let _, lastEvent, _ = List.last rest
                Expect.equal lastEvent "end" "ends again for a finished run"
            }))
        testCaseTask "listing: newest first, filters, cursor pages" (fun () ->
            withRuns [] 2 (fun _ client -> task {
                for _ in 1..3 do
                    let! _ = post client (runBody "log-summary" "{}" "synthetic/default.rlog.zst") None
                    ()

                let! _ =
                    post client (runBody "rlog-to-csv" """{"buses":"1"}""" "synthetic/default.rlog.zst") None

                let! page1 = getJson client "/v1/runs?limit=2"
                let runs1 = page1.GetProperty("runs").EnumerateArray() |> List.ofSeq
                Expect.equal runs1.Length 2 "page size"
                let cursor = page1.GetProperty("next_cursor").GetString()
                let! page2 = getJson client $"/v1/runs?limit=2&cursor={Uri.EscapeDataString cursor}"
                let runs2 = page2.GetProperty("runs").EnumerateArray() |> List.ofSeq
                Expect.equal runs2.Length 2 "second page"
                Expect.equal (page2.GetProperty("next_cursor").ValueKind) JsonValueKind.Null "last page"

                let created =
                    (runs1 @ runs2)
                    |> List.map (fun r -> r.GetProperty("created_at").GetDateTimeOffset())

                Expect.equal created (created |> List.sortDescending) "newest first"
                let! tools = getJson client "/v1/runs?tool_id=rlog-to-csv"
                Expect.equal (tools.GetProperty("runs").GetArrayLength()) 1 "by tool"
                let! badStatus = client.GetAsync "/v1/runs?status=sleeping"
                let! _ = EndpointTests.expectProblem badStatus 400
                ()
            }))
        uploads
        testCaseTask "a run whose worker died (lease expired) is claimed again and completes" (fun () -> task {
            let dataDir = TestEnv.tempDir "lease"
            let store = EndpointTests.openStore dataDir
            let runs = SqliteRunStore.create dataDir
            let now = DateTimeOffset.UtcNow

            let parameters =
                ToolRunner.prepare "log-summary" []
                |> Result.map _.Parameters
                |> Result.defaultWith (failwithf "%A")

            let run =
                RunRecord.queued
                    "log-summary"
                    ((CtsLite.Api.parameters parameters).GetRawText())
                    (CtsLite.InputRef.Path "synthetic/default.rlog.zst")
                    None
                    now

            let! _ = runs.CreateRun(run, None, 1000)
            // A worker of a process that then died: its lease ran out a minute ago.
            let! claimed =
                runs.ClaimNext("dead-worker", now.AddMinutes -2.0, now.AddMinutes -1.0)

            Expect.equal (claimed |> Option.map _.RunId) (Some run.RunId) "claimed by the dead worker"
            let! left = runs.GetRun run.RunId
            Expect.equal left.Value.Status RunStatus.Running "left running"

            let config = {
                EndpointTests.configFor dataDir with
                    InputRoots = [ rlogs () ]
                    MaxConcurrentRuns = 1
            }

            let context = Startup.createContext config store TimeProvider.System
            use host = EndpointTests.startHost context Startup.configureApp
            use client = host.GetTestClient()
            let! final = waitTerminal client run.RunId
            Expect.equal (final.GetProperty("status").GetString()) "completed" "run again to the end"
            do! host.StopAsync()
            store.Dispose()
        })
    ]
