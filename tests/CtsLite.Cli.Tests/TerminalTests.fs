/// `cts` as users meet it: through a connection that drops, and on a real terminal (tmux).
module CtsLite.Cli.Tests.TerminalTests

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.IO
open System.Net
open System.Net.Sockets
open System.Text
open System.Text.Json
open System.Threading
open System.Threading.Tasks
open Expecto
open CtsLite.Cli
open CtsLite.Tests

let private segment () =
    Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "default.rlog.zst")

/// A TCP proxy in front of a service on loopback. It can slow what clients send (an upload over
/// a slow link) and cut the first run-log stream (SSE) right after its first log line, as a dropped
/// connection would. Every request head it forwards is kept.
type private Proxy(targetUrl: string, bytesPerSecond: int option, cutFirstStream: bool) =
    let target = Uri targetUrl
    let listener = new TcpListener(IPAddress.Loopback, 0)
    let stop = new CancellationTokenSource()
    let heads = ConcurrentQueue<string>()
    let mutable streamsCut = 0

    let isLogStream (text: string) =
        text.StartsWith("GET /v1/runs/", StringComparison.Ordinal)
        && text.Contains "/logs"
        && not (text.Contains "format=json")

    let serve (client: TcpClient) = task {
        use client = client
        use server = new TcpClient()
        do! server.ConnectAsync(target.Host, target.Port)
        let fromClient = client.GetStream()
        let fromServer = server.GetStream()
        // Set when this connection carries the stream to cut.
        let mutable cutting = false

        let up = task {
            let buffer = Array.zeroCreate<byte> 16384

            let chunk =
                match bytesPerSecond with
                | Some rate -> max 1 (min buffer.Length (rate / 20))
                | None -> buffer.Length

            let mutable go = true

            while go do
                let! n = fromClient.ReadAsync(buffer, 0, chunk)

                if n <= 0 then
                    go <- false
                else
                    let text = Encoding.Latin1.GetString(buffer, 0, min n 512)

                    if
                        text.StartsWith("GET ", StringComparison.Ordinal)
                        || text.StartsWith("POST ", StringComparison.Ordinal)
                    then
                        heads.Enqueue text

                        if cutFirstStream && isLogStream text && Interlocked.Increment(&streamsCut) = 1 then
                            cutting <- true

                    do! fromServer.WriteAsync(buffer, 0, n)

                    match bytesPerSecond with
                    | Some rate -> do! Task.Delay(1000 * n / rate)
                    | None -> ()
        }

        let down = task {
            let buffer = Array.zeroCreate<byte> 16384
            let seen = StringBuilder()
            let mutable go = true

            while go do
                let! n = fromServer.ReadAsync(buffer, 0, buffer.Length)

                if n <= 0 then
                    go <- false
                elif cutting then
                    // Latin-1: one char per byte, so positions in the text are byte offsets.
                    let before = seen.Length
                    seen.Append(Encoding.Latin1.GetString(buffer, 0, n)) |> ignore
                    let all = seen.ToString()
                    let data = all.IndexOf("event: log\ndata: ", StringComparison.Ordinal)

                    let ending =
                        if data < 0 then
                            -1
                        else
                            all.IndexOf("\n\n", data, StringComparison.Ordinal)

                    if ending < 0 then
                        do! fromClient.WriteAsync(buffer, 0, n)
                    else
                        // The first log line whole, then the connection is gone.
                        do! fromClient.WriteAsync(buffer, 0, ending + 2 - before)
                        do! fromClient.FlushAsync()
                        client.Client.Close()
                        server.Client.Close()
                        go <- false
                else
                    do! fromClient.WriteAsync(buffer, 0, n)
        }

        try
            let! _ = Task.WhenAny(up, down)
            ()
        with _ ->
            ()
    }

    do listener.Start()

    let accept () : Task = task {
        try
            while not stop.IsCancellationRequested do
                let! client = listener.AcceptTcpClientAsync(stop.Token)

                let _: Task =
                    Task.Run(
                        Func<Task>(fun () -> task {
                            try
                                do! serve client
                            with _ ->
                                ()
                        })
                    )

                ()
        with _ ->
            ()
    }

    let accepting: Task = Task.Run(Func<Task>(fun () -> accept ()))

    member _.Url = $"http://127.0.0.1:{(listener.LocalEndpoint :?> IPEndPoint).Port}"
    member _.Heads = List.ofSeq heads

    interface IDisposable with
        member _.Dispose() =
            stop.Cancel()
            listener.Stop()
            accepting.Wait(TimeSpan.FromSeconds 5.0) |> ignore

/// The `level: message` lines of a run's log as `cts run` prints them, and as `cts logs` does.
let private runLines (err: string) =
    err.Split('\n')
    |> Array.filter (fun l -> l.StartsWith "info: " || l.StartsWith "warning: ")
    |> List.ofArray

let private logLines (log: string) =
    log.Split('\n', StringSplitOptions.RemoveEmptyEntries)
    |> Array.map (fun l ->
        // HH:mm:ss.fff level [source] message
        let parts = l.Split(' ', 4)
        $"{parts[1]}: {parts[3]}")
    |> List.ofArray

let private runIdIn (out: string) =
    let m = RegularExpressions.Regex.Match(out, @"run ([0-9a-f-]{36}): ")
    Expect.isTrue m.Success $"the run's id is printed: {out}"
    m.Groups[1].Value

/// Runs a command in a detached tmux session of its own server, snapshotting the screen every
/// 50 ms until `finished` appears on it; the snapshots in order.
let private inTmux (command: string) (finished: string) : string list =
    let socket = $"cts-test-{Guid.NewGuid():N}"

    let tmux (args: string list) =
        let info =
            ProcessStartInfo(
                "tmux",
                "-L" :: socket :: args,
                RedirectStandardOutput = true,
                RedirectStandardError = true
            )

        info.Environment.Remove "NO_COLOR" |> ignore
        use p = Process.Start info
        let out = p.StandardOutput.ReadToEnd()
        let err = p.StandardError.ReadToEnd()
        p.WaitForExit()
        p.ExitCode, out, err

    let code, _, err =
        tmux [
            "new-session"
            "-d"
            "-x"
            "120"
            "-y"
            "40"
            "-s"
            "cts"
            $"{command}; sleep 60"
        ]

    Expect.equal code 0 $"tmux started ({err})"

    try
        let shots = ResizeArray<string>()
        let deadline = DateTime.UtcNow.AddSeconds 90.0
        let mutable fin = false

        while not fin && DateTime.UtcNow < deadline do
            let _, screen, _ = tmux [ "capture-pane"; "-p"; "-t"; "cts" ]
            shots.Add screen
            fin <- screen.Contains finished
            Thread.Sleep 50

        Expect.isTrue fin $"the command finished on the terminal:\n{Seq.last shots}"
        List.ofSeq shots
    finally
        tmux [ "kill-server" ] |> ignore

/// A route of `count` segments under a folder of its own, each segment a link to the synthetic
/// segment: a long drive that costs no disk. Returns the folder and the route's address in it.
let private longRoute (count: int) =
    let root = TestEnv.tempDir "long-route"

    for i in 0 .. count - 1 do
        let segment' =
            Directory.CreateDirectory(Path.Combine(root, $"0123456789abcdef|2025-02-01--08-00-00--{i}"))

        File.CreateSymbolicLink(Path.Combine(segment'.FullName, "rlog.zst"), segment ())
        |> ignore

    root, "0123456789abcdef|2025-02-01--08-00-00"

/// Starts `cts` (the built program) with `args`; its stderr lines as they come.
let private start (args: string list) =
    let info =
        ProcessStartInfo(
            Tests.ctsExe (),
            args,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false
        )

    let proc = Process.Start info
    let lines = new BlockingCollection<string>()
    let all = ConcurrentQueue<string>()

    proc.ErrorDataReceived.Add(fun e ->
        if not (isNull e.Data) then
            all.Enqueue e.Data
            lines.Add e.Data)

    proc.BeginErrorReadLine()
    let out = proc.StandardOutput.ReadToEndAsync()

    let waitFor (text: string) =
        let deadline = DateTime.UtcNow.AddSeconds 60.0
        let mutable found = false

        while not found && DateTime.UtcNow < deadline do
            let mutable line = null

            if lines.TryTake(&line, 200) then
                found <- line.Contains text

        Expect.isTrue found $"""cts said '{text}': {String.Join("\n", all)}"""

    let interrupt () =
        use kill = Process.Start("kill", [ "-INT"; string proc.Id ])
        kill.WaitForExit()

    proc, waitFor, interrupt, out, (fun () -> String.Join("\n", all))

/// The service as its own process on a free loopback port, for the length of `f` (its URL).
let private withServerProcess (variables: (string * string) list) (f: string -> unit) =
    let info =
        Tests.dotnetProcess
            (Path.Combine(TestEnv.projectOutput "CtsLite.Server", "CtsLite.Server.dll"))
            []
            ([ "CTS_API_PORT", "0"; "CTS_DATA_DIR", TestEnv.tempDir "server-process" ]
             @ variables)

    use server = Process.Start info
    let output = ConcurrentQueue<string>()
    use listening = new ManualResetEventSlim()
    let mutable url = ""

    let take (line: string) =
        if not (isNull line) then
            output.Enqueue line

            let m =
                RegularExpressions.Regex.Match(line, @"listening on (http://127\.0\.0\.1:\d+)")

            if m.Success then
                url <- m.Groups[1].Value
                listening.Set()

    server.OutputDataReceived.Add(fun e -> take e.Data)
    server.ErrorDataReceived.Add(fun e -> take e.Data)
    server.BeginOutputReadLine()
    server.BeginErrorReadLine()

    try
        Expect.isTrue
            (listening.Wait(TimeSpan.FromSeconds 60.0))
            $"""the service started: {String.Join("\n", output)}"""

        f url
    finally
        server.Kill true
        server.WaitForExit()

let all =
    testList "connections and terminals" [
        test "a run's live log survives a dropped connection: resumed, no line twice or missing" {
            Tests.withService (fun url ->
                use proxy = new Proxy(url, None, true)
                let out = TestEnv.tempDir "dropped"

                let code, said, err =
                    Tests.cts [ "run"; "log-summary"; segment (); "--url"; proxy.Url; "--out-dir"; out ]

                Expect.equal code 0 err
                let runErr = err
                let id = runIdIn said

                let streams =
                    proxy.Heads
                    |> List.filter (fun h -> h.StartsWith "GET /v1/runs/" && h.Contains "/logs")

                Expect.isGreaterThanOrEqual streams.Length 2 "the stream was cut and opened again"

                Expect.isTrue
                    (streams |> List.exists (fun h -> h.Contains "Last-Event-ID: "))
                    $"after the last event received: {streams}"

                let code, log, err = Tests.cts [ "logs"; id; "--url"; url ]
                Expect.equal code 0 err
                let whole = logLines log
                Expect.isGreaterThanOrEqual whole.Length 2 "the run logged lines"
                Expect.equal (runLines runErr) whole $"each line once, in order, nothing else: {runErr}"
                Expect.isTrue (File.Exists(Path.Combine(out, "log_summary.json"))) "and the artifacts came")
        }
        test "Ctrl+C on cts run: once cancels the run on the service (exit 4), twice leaves it running (130)" {
            let root, route = longRoute 60

            Tests.withServiceConfig
                (fun c -> {
                    c with
                        InputRoots = [ root; TestEnv.sharedDir () ]
                })
                (fun url ->
                    let proc, waitFor, interrupt, out, said =
                        start [
                            "run"
                            "log-summary"
                            "--path"
                            route
                            "--url"
                            url
                            "--out-dir"
                            TestEnv.tempDir "ctrl-c"
                        ]

                    use proc = proc
                    waitFor "info: started log-summary"
                    interrupt ()
                    waitFor "canceling run"
                    Expect.isTrue (proc.WaitForExit 60_000) "ends once the run has"
                    Expect.equal proc.ExitCode 4 (said ())
                    Expect.stringContains out.Result ": canceled" "says how the run ended"
                    let id = runIdIn out.Result
                    let code, shown, err = Tests.cts [ "--json"; "runs"; "get"; id; "--url"; url ]
                    Expect.equal code 0 err

                    Expect.equal
                        (JsonDocument.Parse(shown).RootElement.GetProperty("status").GetString())
                        "canceled"
                        "canceled on the service"

                    let proc, waitFor, interrupt, _, said =
                        start [
                            "run"
                            "log-summary"
                            "--path"
                            route
                            "--url"
                            url
                            "--out-dir"
                            TestEnv.tempDir "ctrl-c2"
                        ]

                    use proc = proc
                    waitFor "info: started log-summary"
                    interrupt ()
                    waitFor "canceling run"
                    interrupt ()
                    Expect.isTrue (proc.WaitForExit 10_000) "leaves at once"
                    Expect.equal proc.ExitCode 130 (said ())
                    waitFor "left run"

                    let code, listed, err = Tests.cts [ "--json"; "runs"; "list"; "--url"; url ]
                    Expect.equal code 0 err
                    let second = JsonDocument.Parse(listed).RootElement.GetProperty("runs")[0]
                    let status = second.GetProperty("status").GetString()
                    // The first press asked for the cancel already; the second leaves without waiting.
                    Expect.contains [ "running"; "canceled"; "completed" ] status "the run is the service's now")
        }
        test "the real cts against the real service process: a user's session, human and --json" {
            withServerProcess [] (fun url ->
                let cts (args: string list) =
                    let code, out, err = Tests.ctsProcess [] (args @ [ "--url"; url ])
                    Expect.equal code 0 $"cts {String.Join(' ', args)}: {err}"
                    out, err

                let out, _ = cts [ "ping" ]
                Expect.stringContains out "healthy" "ping"
                let out, _ = cts [ "--json"; "ping" ]

                Expect.equal
                    (JsonDocument.Parse(out).RootElement.GetProperty("status").GetString())
                    "healthy"
                    "ping --json"

                let out, _ = cts [ "cap" ]
                Expect.stringContains out "cruise-control-analyzer" "cap"
                let out, _ = cts [ "--json"; "cap" ]

                Expect.isGreaterThan
                    (JsonDocument.Parse(out).RootElement.GetProperty("tools").GetArrayLength())
                    0
                    "cap --json"

                let out, _ = cts [ "version" ]
                Expect.stringContains out CtsLite.Product.version "version"

                let dir = TestEnv.tempDir "session"
                let out, err = cts [ "run"; "log-summary"; segment (); "--out-dir"; dir ]
                Expect.stringContains err "info: completed" "the live log"
                let id = runIdIn out
                Expect.isTrue (File.Exists(Path.Combine(dir, "log_summary.html"))) "downloaded"

                let out, _ = cts [ "runs"; "list" ]
                Expect.stringContains out id "runs list"
                Expect.stringContains out "default.rlog.zst" "with its input"
                let out, _ = cts [ "--json"; "runs"; "get"; id ]

                Expect.equal
                    (JsonDocument.Parse(out).RootElement.GetProperty("status").GetString())
                    "completed"
                    "runs get --json"

                let out, _ = cts [ "logs"; id ]
                Expect.stringContains out "completed: 71943 events" "logs"
                let out, _ = cts [ "--json"; "art"; "list"; id ]
                let artifacts = JsonDocument.Parse(out).RootElement.GetProperty("artifacts")
                Expect.equal (artifacts.GetArrayLength()) 2 "art list --json"
                let first = artifacts[0].GetProperty("artifact_id").GetString()
                let out, _ = cts [ "art"; "get"; first; "--stdout" ]
                Expect.isGreaterThan out.Length 0 "art get --stdout"
                let out, _ = cts [ "uploads"; "list" ]
                Expect.stringContains out "default.rlog.zst" "uploads list"

                let code, _, err = Tests.ctsProcess [] [ "runs"; "get"; "nope"; "--url"; url ]
                Expect.equal code 1 "a 404 is the request's fault"
                Expect.stringContains err "request" "with the service's request id")
        }
        test "on a terminal: a progress bar while uploading, then the live log; piped, no control characters" {
            Tests.withService (fun url ->
                // Four segments in one file (10 MB) at 2 MB/s: the upload lasts long enough to be
                // seen, past what the kernel's socket buffers take at once.
                use proxy = new Proxy(url, Some 2_000_000, false)
                let out = TestEnv.tempDir "terminal"
                let big = Path.Combine(TestEnv.tempDir "terminal-log", "four.rlog.zst")
                File.WriteAllBytes(big, Array.concat (List.replicate 4 (File.ReadAllBytes(segment ()))))

                let exe = Tests.ctsExe ()
                let log = big

                let command =
                    $"'{exe}' run log-summary '{log}' --url {proxy.Url} --out-dir '{out}'; echo EXIT-$?"

                let shots = inTmux command "EXIT-"
                let last = List.last shots

                let bars =
                    shots
                    |> List.filter (fun s -> s.Contains "upload four.rlog.zst" && s.Contains "%")

                Expect.isNonEmpty
                    bars
                    $"""a progress bar for the upload, with its share done: {String.Join("\n=====\n", shots |> List.distinct)}"""

                Expect.isTrue (bars |> List.exists (fun s -> not (s.Contains "100%"))) "seen while it was under way"

                Expect.stringContains last "EXIT-0" "the run completed"
                Expect.stringContains last "info: started log-summary" "the live log on the terminal"
                Expect.stringContains last $"completed: {4 * 71943} events" "to its last line"
                Expect.stringContains last "artifacts in" "and where the artifacts went"
                Expect.isFalse (last.Contains "upload four.rlog.zst") "the bars are gone at the end"

                // The same command into pipes: plain text only.
                let info =
                    ProcessStartInfo(
                        Tests.ctsExe (),
                        [ "run"; "log-summary"; segment (); "--url"; url; "--out-dir"; out; "--force" ],
                        RedirectStandardOutput = true,
                        RedirectStandardError = true
                    )

                use p = Process.Start info
                let stdout = p.StandardOutput.ReadToEndAsync()
                let stderr = p.StandardError.ReadToEnd()
                p.WaitForExit()
                Expect.equal p.ExitCode 0 stderr

                for text in [ stdout.Result; stderr ] do
                    Expect.isFalse
                        (text |> Seq.exists (fun c -> Char.IsControl c && c <> '\n'))
                        $"no control characters in piped output: {text}"

                Expect.stringContains stderr "info: started log-summary" "the log lines all the same")
        }
    ]
