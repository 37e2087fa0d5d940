/// The service as users run it: a separate process on a loopback port, spoken to over real HTTP.
module CtsLite.Server.Tests.ProcessTests

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.IO
open System.Net
open System.Net.Http
open System.Runtime.InteropServices
open System.Text.Json
open System.Text.RegularExpressions
open System.Threading
open Expecto
open CtsLite.Tests

[<DllImport("libc", SetLastError = true)>]
extern int kill(int pid, int signal)

let private SIGTERM = 15

/// A running server process with its output collected line by line.
type ServerProcess(proc: Process, lines: BlockingCollection<string>, all: ConcurrentQueue<string>) =
    member _.Process = proc
    member _.Output = String.Join("\n", all)

    /// Waits for a line matching `pattern` and returns its first group.
    member _.WaitFor(pattern: string, timeout: TimeSpan) : string option =
        let deadline = DateTime.UtcNow + timeout
        let regex = Regex pattern
        let mutable found = None

        while found.IsNone && DateTime.UtcNow < deadline do
            let mutable line = null

            if lines.TryTake(&line, TimeSpan.FromMilliseconds 200.0) then
                let m = regex.Match line

                if m.Success then
                    found <- Some m.Groups[1].Value

        found

    interface IDisposable with
        member _.Dispose() =
            if not proc.HasExited then
                proc.Kill true
                proc.WaitForExit 10000 |> ignore

            proc.Dispose()

let serverDll () =
    Path.Combine(TestEnv.projectOutput "CtsLite.Server", "CtsLite.Server.dll")

/// Starts `dotnet CtsLite.Server.dll` with the given variables (and a clean CTS_ environment).
let start (variables: (string * string) list) : ServerProcess =
    let info = ProcessStartInfo("dotnet", $"\"{serverDll ()}\"")
    info.RedirectStandardOutput <- true
    info.RedirectStandardError <- true
    info.UseShellExecute <- false

    for key in List.ofSeq info.Environment.Keys do
        if key.StartsWith "CTS_" then
            info.Environment.Remove key |> ignore

    for key, value in variables do
        info.Environment[key] <- value

    let lines = new BlockingCollection<string>()
    let all = ConcurrentQueue<string>()
    let proc = new Process(StartInfo = info)

    let collect (e: DataReceivedEventArgs) =
        if not (isNull e.Data) then
            all.Enqueue e.Data
            lines.Add e.Data

    proc.OutputDataReceived.Add collect
    proc.ErrorDataReceived.Add collect
    proc.Start() |> ignore
    proc.BeginOutputReadLine()
    proc.BeginErrorReadLine()
    new ServerProcess(proc, lines, all)

/// A body that sends its first bytes, then waits forever: an upload in flight.
type private StalledContent(first: byte array, gate: Threading.Tasks.Task) =
    inherit HttpContent()

    override _.SerializeToStreamAsync(stream: Stream, _: TransportContext) : Threading.Tasks.Task = task {
        do! stream.WriteAsync(first, 0, first.Length)
        do! stream.FlushAsync()
        do! gate
    }

    override _.TryComputeLength(length: byref<int64>) =
        length <- 0L
        false

let private sha256File (path: string) =
    use s = File.OpenRead path
    Convert.ToHexString(Security.Cryptography.SHA256.HashData s).ToLowerInvariant()

let private waitListening (server: ServerProcess) =
    match server.WaitFor(@"listening on (http://127\.0\.0\.1:\d+)", TimeSpan.FromSeconds 60.0) with
    | Some u -> u
    | None -> failtestf "server did not start:\n%s" server.Output

let killTest =
    testCaseTask "kill -9 with runs queued and running and an upload streaming: nothing lost after restart" (fun () -> task {
        let rlogs = Path.Combine(TestEnv.sharedDir (), "data", "rlogs")
        let routeName = "5ca1ab1e5ca1ab1e|2025-01-16--07-45-12"
        let root = TestEnv.tempDir "kill-root"

        let segment =
            Path.Combine(rlogs, "synthetic", "route", $"{routeName}--0", "rlog.zst")

        // A long route (60 links to one real segment) so a run lasts about a second.
        for n in 0..59 do
            let dir = Directory.CreateDirectory(Path.Combine(root, $"{routeName}--{n}"))

            File.CreateSymbolicLink(Path.Combine(dir.FullName, "rlog.zst"), segment)
            |> ignore

        let dataDir = TestEnv.tempDir "kill-data"

        let variables = [
            "CTS_API_PORT", "0"
            "CTS_DATA_DIR", dataDir
            "CTS_MAX_CONCURRENT_RUNS", "1"
            "CTS_INPUT_ROOTS", $"{root}:{rlogs}"
            "CTS_RATE_LIMIT_PER_MINUTE", "0"
        ]

        use http = new HttpClient(Timeout = TimeSpan.FromSeconds 60.0)
        let first = start variables
        let url = waitListening first

        // One complete upload, then three runs, then an upload left streaming.
        let log = Path.Combine(rlogs, "synthetic", "default.rlog.zst")
        use content = new ByteArrayContent(File.ReadAllBytes log)
        content.Headers.Add("X-Filename", "default.rlog.zst")
        let! uploaded = http.PostAsync(url + "/v1/uploads", content)
        Expect.equal uploaded.StatusCode HttpStatusCode.Created "upload stored"
        let! uploadBody = uploaded.Content.ReadAsStringAsync()

        let uploadId =
            JsonDocument.Parse(uploadBody).RootElement.GetProperty("upload_id").GetString()

        let runIds = ResizeArray<string>()

        for _ in 1..3 do
            let body =
                $"""{{"tool_id":"log-summary","params":{{}},"input":{{"type":"path","value":{JsonSerializer.Serialize(Path.Combine(root, routeName))}}}}}"""

            use request = new StringContent(body, Text.Encoding.UTF8, "application/json")
            let! r = http.PostAsync(url + "/v1/runs", request)
            Expect.equal r.StatusCode HttpStatusCode.Accepted "run accepted"
            let! rb = r.Content.ReadAsStringAsync()
            runIds.Add(JsonDocument.Parse(rb).RootElement.GetProperty("run_id").GetString())

        let gate = Threading.Tasks.TaskCompletionSource()
        let stalled = new StalledContent(Array.create 300_000 0x28uy, gate.Task)
        stalled.Headers.Add("X-Filename", "stalled.zst")
        let inFlight = http.PostAsync(url + "/v1/uploads", stalled)

        // Wait until the first run runs and the stalled upload has bytes on disk.
        let deadline = DateTime.UtcNow.AddSeconds 60.0
        let mutable ready = false

        while not ready && DateTime.UtcNow < deadline do
            let! runJson = http.GetStringAsync(url + $"/v1/runs/{runIds[0]}")

            let running =
                JsonDocument.Parse(runJson).RootElement.GetProperty("status").GetString() = "running"

            let uploads = Path.Combine(dataDir, "uploads")

            let partial =
                Directory.Exists uploads
                && Directory.GetFiles(uploads, "*.part", SearchOption.TopDirectoryOnly).Length > 0

            ready <- running && partial

            if not ready then
                do! Threading.Tasks.Task.Delay 20

        Expect.isTrue ready "a run is running and an upload is streaming"
        Expect.equal (kill (first.Process.Id, 9)) 0 "SIGKILL sent"
        Expect.isTrue (first.Process.WaitForExit 10000) "killed"
        gate.SetResult()

        try
            let! _ = inFlight
            ()
        with _ ->
            ()

        (first :> IDisposable).Dispose()

        // Restart on the same data dir.
        use second = start variables
        let url = waitListening second
        let! uploadJson = http.GetStringAsync(url + $"/v1/uploads/{uploadId}")
        let upload = JsonDocument.Parse(uploadJson).RootElement
        Expect.equal (upload.GetProperty("sha256").GetString()) (sha256File log) "the accepted upload is intact"

        let uploadPath = Path.Combine(dataDir, "uploads", uploadId)
        Expect.equal (sha256File uploadPath) (sha256File log) "its file too"

        // Every run ends (the killed one after its lease runs out), each artifact whole.
        for id in runIds do
            let mutable status = ""
            let deadline = DateTime.UtcNow.AddSeconds 120.0

            while status <> "completed"
                  && status <> "failed"
                  && status <> "canceled"
                  && DateTime.UtcNow < deadline do
                let! runJson = http.GetStringAsync(url + $"/v1/runs/{id}")
                status <- JsonDocument.Parse(runJson).RootElement.GetProperty("status").GetString()

                if status <> "completed" then
                    do! Threading.Tasks.Task.Delay 250

            Expect.equal status "completed" $"run {id} completed after the restart"
            let! artifactsJson = http.GetStringAsync(url + $"/v1/runs/{id}/artifacts")

            for a in JsonDocument.Parse(artifactsJson).RootElement.GetProperty("artifacts").EnumerateArray() do
                let! bytes = http.GetByteArrayAsync(url + a.GetProperty("download_url").GetString())

                Expect.equal
                    (Convert.ToHexString(Security.Cryptography.SHA256.HashData bytes).ToLowerInvariant())
                    (a.GetProperty("sha256").GetString())
                    "artifact whole"

                if a.GetProperty("filename").GetString() = "log_summary.json" then
                    let events = JsonDocument.Parse(bytes).RootElement.GetProperty("events").GetInt64()
                    Expect.equal events (60L * 71940L) "the whole route was read, from its start"
    })

/// Each tool through the real process: upload an rlog, run on it, follow SSE to `end`, download
/// every artifact, and compare with a local run of the tool on the same bytes.
let everyToolTest =
    testCaseTask "every tool through the real server: upload, run, SSE to end, artifacts equal a local run" (fun () -> task {
        let source =
            Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "default.rlog.zst")

        // The local copy has the name the upload is given, so both runs name their input alike.
        let localDir = TestEnv.tempDir "every-tool-input"
        let localInput = Path.Combine(localDir, "default.rlog.zst")
        File.Copy(source, localInput)
        let dataDir = TestEnv.tempDir "every-tool-data"

        use server =
            start [
                "CTS_API_PORT", "0"
                "CTS_DATA_DIR", dataDir
                "CTS_RATE_LIMIT_PER_MINUTE", "0"
            ]

        let url = waitListening server
        use http = new HttpClient(Timeout = TimeSpan.FromSeconds 120.0)
        use content = new ByteArrayContent(File.ReadAllBytes source)
        content.Headers.Add("X-Filename", "default.rlog.zst")
        use! uploaded = http.PostAsync(url + "/v1/uploads", content)
        Expect.equal uploaded.StatusCode HttpStatusCode.Created "uploaded"
        let! u = uploaded.Content.ReadAsStringAsync()

        let uploadId =
            JsonDocument.Parse(u).RootElement.GetProperty("upload_id").GetString()

        let uploadDir = Path.Combine(dataDir, "uploads")

        let mask (dirs: string list) (text: string) =
            let t = dirs |> List.fold (fun (t: string) d -> t.Replace(d, "<dir>")) text

            let t =
                Regex.Replace(t, "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>")

            Regex.Replace(t, @"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}[^""<,\s]*", "<time>")

        let tools = [
            "cruise-control-analyzer", "{}"
            "rlog-to-csv", """{"window_start":20,"window_dur":10}"""
            "can-bitwatch", """{"window_start":20,"window_dur":10,"watch":["0x390:B4b1","0x13C:B0b0"]}"""
            "signal-export",
            """{"dbc":"subaru_global_2017_generated.dbc","signals":["Wheel_Speeds.FL","Cruise_Buttons.Set"],"rate_hz":5}"""
            "log-summary", "{}"
        ]

        Expect.equal
            (tools |> List.map fst |> List.sort)
            (CtsLite.Tools.Catalog.descriptors |> List.map _.Id |> List.sort)
            "every registered tool"

        for toolId, parameters in tools do
            let body =
                $"""{{"tool_id":"{toolId}","params":{parameters},"input":{{"type":"upload","value":"{uploadId}"}}}}"""

            use request = new StringContent(body, Text.Encoding.UTF8, "application/json")
            use! created = http.PostAsync(url + "/v1/runs", request)
            let! c = created.Content.ReadAsStringAsync()
            Expect.equal created.StatusCode HttpStatusCode.Accepted $"{toolId}: accepted ({c})"
            let runId = JsonDocument.Parse(c).RootElement.GetProperty("run_id").GetString()

            // Follow the SSE stream until the server ends it.
            use! stream = http.GetStreamAsync($"{url}/v1/runs/{runId}/logs")
            use reader = new StreamReader(stream)
            let! sse = reader.ReadToEndAsync()

            let events = [
                for m in Regex.Matches(sse, @"event: (\w+)\ndata: (.*)\n") -> m.Groups[1].Value, m.Groups[2].Value
            ]

            let lastEvent, lastData = List.last events
            Expect.equal lastEvent "end" $"{toolId}: the stream ends with end"

            Expect.equal
                (JsonDocument.Parse(lastData).RootElement.GetProperty("status").GetString())
                "completed"
                $"{toolId}: completed ({lastData})"

            use doc = JsonDocument.Parse parameters

            let localOut, local =
                RunTests.localRunWith toolId localInput (CtsLite.Server.RunParameters.ofObject doc.RootElement)

            let expected = local.Artifacts |> List.sort

            let! listing = http.GetStringAsync($"{url}/v1/runs/{runId}/artifacts")

            let artifacts =
                JsonDocument.Parse(listing).RootElement.GetProperty("artifacts").EnumerateArray()
                |> List.ofSeq

            Expect.equal
                (artifacts
                 |> List.map (fun a -> a.GetProperty("filename").GetString())
                 |> List.sort)
                expected
                $"{toolId}: the same files"

            for a in artifacts do
                let name = a.GetProperty("filename").GetString()
                let! bytes = http.GetByteArrayAsync(url + a.GetProperty("download_url").GetString())

                Expect.equal
                    (Convert.ToHexString(Security.Cryptography.SHA256.HashData bytes).ToLowerInvariant())
                    (a.GetProperty("sha256").GetString())
                    $"{toolId}/{name}: sha256"

                let text = Text.Encoding.UTF8.GetString bytes
                Expect.isFalse (text.Contains dataDir) $"{toolId}/{name}: no server path in what a client downloads"
                let ours = mask [ uploadDir; Path.Combine(dataDir, "runs") ] text

                // The service shows its input by the upload's name; the local run by its path.
                let theirs =
                    (mask [ localDir; localOut ] (File.ReadAllText(Path.Combine(localOut, name))))
                        .Replace("<dir>/default.rlog.zst", "default.rlog.zst")

                Expect.equal ours theirs $"{toolId}/{name}: equal to the local run"
    })

let all =
    testSequenced
    <| testList "server process" [
        killTest
        everyToolTest
        testCaseTask "serves /v1/health on a loopback port and stops gracefully on SIGTERM" (fun () -> task {
            Expect.isTrue (File.Exists(serverDll ())) $"server built at {serverDll ()}"
            let dataDir = TestEnv.tempDir "proc"

            use server =
                start [ "CTS_API_PORT", "0"; "CTS_DATA_DIR", dataDir; "CTS_LOG_LEVEL", "info" ]

            let url =
                match server.WaitFor(@"listening on (http://127\.0\.0\.1:\d+)", TimeSpan.FromSeconds 60.0) with
                | Some u -> u
                | None -> failtestf "server did not start:\n%s" server.Output

            use http = new HttpClient(Timeout = TimeSpan.FromSeconds 30.0)
            use! response = http.GetAsync(url + "/v1/health")
            Expect.equal response.StatusCode HttpStatusCode.OK "200 over real HTTP"
            let! body = response.Content.ReadAsStringAsync()
            let root = JsonDocument.Parse(body).RootElement
            Expect.equal (root.GetProperty("status").GetString()) "healthy" "healthy"
            Expect.isTrue (File.Exists(Path.Combine(dataDir, "cts-lite.db"))) "store created in the data dir"

            Expect.equal (kill (server.Process.Id, SIGTERM)) 0 "signal sent"
            Expect.isTrue (server.Process.WaitForExit 30000) "exits after SIGTERM"
            Expect.equal server.Process.ExitCode 0 "clean exit code"
            Expect.isSome (server.WaitFor("(CtsLite stopped)", TimeSpan.FromSeconds 5.0)) "logs its stop"
            Expect.stringContains server.Output "HTTP GET /v1/health responded 200" "request logged"
        })

        testCase "a port in use is one line naming the setting, exit code 1" (fun () ->
            use busy = new Net.Sockets.TcpListener(Net.IPAddress.Loopback, 0)
            busy.Start()
            let port = (busy.LocalEndpoint :?> Net.IPEndPoint).Port

            try
                use server =
                    start [ "CTS_API_PORT", string port; "CTS_DATA_DIR", TestEnv.tempDir "proc" ]

                Expect.isTrue (server.Process.WaitForExit 60000) "exits"
                Expect.equal server.Process.ExitCode 1 "exit code 1"
                // The output is collected asynchronously: wait for the line.
                Expect.isSome (server.WaitFor("(already in use)", TimeSpan.FromSeconds 5.0)) "says why"

                let lines =
                    server.Output.Split('\n') |> Array.filter (fun l -> l.Contains "cts-lite:")

                match lines with
                | [| line |] ->
                    Expect.stringContains line $"127.0.0.1:{port}" "names the address"
                    Expect.stringContains line "CTS_API_PORT" "names the setting"
                | other -> failtestf "expected one line: %A" other

                Expect.isFalse (server.Output.Contains "   at ") "no stack trace"
                Expect.isFalse (server.Output.Contains "Exception") "no exception text"
            finally
                busy.Stop())
        testCase "a bad configuration value stops start-up naming the variable" (fun () ->
            use server =
                start [ "CTS_API_PORT", "eighty"; "CTS_DATA_DIR", TestEnv.tempDir "proc" ]

            Expect.isTrue (server.Process.WaitForExit 60000) "exits"
            Expect.equal server.Process.ExitCode 2 "exit code 2"

            Expect.isSome
                (server.WaitFor("(CTS_API_PORT = 'eighty' is invalid)", TimeSpan.FromSeconds 5.0))
                server.Output)

        testCase "a secret never reaches the output" (fun () ->
            let secret = "do-not-print-this-secret"

            use server =
                start [ "CTS_JWT_SECRET", secret; "CTS_DATA_DIR", TestEnv.tempDir "proc" ]

            Expect.isTrue (server.Process.WaitForExit 60000) "exits"
            Expect.equal server.Process.ExitCode 2 "too short: refused"
            server.WaitFor("(CTS_JWT_SECRET)", TimeSpan.FromSeconds 5.0) |> ignore
            Expect.stringContains server.Output "CTS_JWT_SECRET is invalid" "names the variable"
            Expect.isFalse (server.Output.Contains secret) "value not printed")
    ]
