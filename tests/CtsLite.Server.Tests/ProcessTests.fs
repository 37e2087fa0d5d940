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

let all =
    testSequenced
    <| testList "server process" [
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
