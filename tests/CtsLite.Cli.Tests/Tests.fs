module CtsLite.Cli.Tests.Tests

open System
open System.IO
open System.Text.Json
open Expecto
open Microsoft.Extensions.Hosting
open FsCheck
open CtsLite
open CtsLite.Cli
open CtsLite.Server
open CtsLite.Tests

/// Runs `cts` in process and returns (exit code, stdout, stderr).
let cts (args: string list) : int * string * string =
    use err = new StringWriter()
    use stdout = new MemoryStream()
    let code = Program.run (Array.ofList args) stdout err
    code, Text.Encoding.UTF8.GetString(stdout.ToArray()), err.ToString()

/// `dotnet <dll> args` with its output redirected, with `variables` and without the CTS_*
/// variables of the test's own environment.
let dotnetProcess (dll: string) (args: string list) (variables: (string * string) list) =
    let info =
        Diagnostics.ProcessStartInfo(
            "dotnet",
            dll :: args,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false
        )

    for key in List.ofSeq info.Environment.Keys do
        if key.StartsWith "CTS_" then
            info.Environment.Remove key |> ignore

    for key, value in variables do
        info.Environment[key] <- value

    info

/// `cts` as its own process with `variables` (and no CTS_* of the test's own environment).
let ctsProcess (variables: (string * string) list) (args: string list) =
    let info =
        dotnetProcess (Path.Combine(TestEnv.projectOutput "CtsLite.Cli", "cts.dll")) args variables

    use proc = Diagnostics.Process.Start info
    let out = proc.StandardOutput.ReadToEndAsync()
    let err = proc.StandardError.ReadToEndAsync()
    proc.WaitForExit()
    proc.ExitCode, out.Result, err.Result

/// The built `cts` program (its apphost), for tests that start it as users do.
let ctsExe () =
    Path.Combine(Path.GetDirectoryName(typeof<CtsLite.Cli.CommandContext>.Assembly.Location), "cts")

/// A real Kestrel service on a free loopback port, its configuration changed by `change`.
let withServiceConfig (change: ServiceConfig -> ServiceConfig) (f: string -> unit) =
    let dataDir = TestEnv.tempDir "cli"

    let config =
        change {
            Config.defaults () with
                DataDir = dataDir
                ApiPort = 0
                LogLevel = Microsoft.Extensions.Logging.LogLevel.Warning
        }

    use store =
        match SqliteStore.openIn dataDir with
        | Ok s -> s
        | Error e -> failwith (StoreError.describe e)

    use host =
        Startup.buildHost (Startup.createContext config store TimeProvider.System) false

    host.Start()
    let url = Startup.addresses host |> List.head

    try
        f url
    finally
        host.StopAsync().GetAwaiter().GetResult()

/// A real Kestrel service on a free loopback port for the duration of `f`.
let withService (f: string -> unit) = withServiceConfig id f

/// A port nothing listens on.
let closedPort () =
    let listener = new Net.Sockets.TcpListener(Net.IPAddress.Loopback, 0)
    listener.Start()
    let port = (listener.LocalEndpoint :?> Net.IPEndPoint).Port
    listener.Stop()
    port

let private rlogs () =
    Path.Combine(TestEnv.sharedDir (), "data", "rlogs")

let remoteRuns =
    testList "cts run on the service" [
        test "a local log is uploaded, run, followed and its artifacts downloaded" {
            withServiceConfig (fun c -> { c with InputRoots = [ rlogs () ] }) (fun url ->
                let log = Path.Combine(rlogs (), "synthetic", "default.rlog.zst")
                let remoteDir = TestEnv.tempDir "remote"

                let code, out, err =
                    cts [
                        "run"
                        "cruise-control-analyzer"
                        log
                        "-p"
                        "speed_min=55"
                        "--url"
                        url
                        "--out-dir"
                        remoteDir
                    ]

                Expect.equal code 0 err
                Expect.stringContains out "completed" "status"
                Expect.stringContains err "3 Set press(es)" "the run's log is followed"

                let localDir = TestEnv.tempDir "local"

                let code, _, err =
                    cts [
                        "run"
                        "--local"
                        "cruise-control-analyzer"
                        log
                        "-p"
                        "speed_min=55"
                        "--out-dir"
                        localDir
                    ]

                Expect.equal code 0 err

                for file in [ "summary.json"; "candidates.json"; "edges.json"; "timeline.json" ] do
                    Expect.equal
                        (File.ReadAllText(Path.Combine(remoteDir, file)))
                        (File.ReadAllText(Path.Combine(localDir, file)))
                        $"{file} equals the local run's"

                Expect.equal
                    (Directory.GetFiles remoteDir |> Array.map Path.GetFileName |> Array.sort)
                    (Directory.GetFiles localDir |> Array.map Path.GetFileName |> Array.sort)
                    "the same artifacts")
        }
        test "a path on the service's side; errors exit 2 naming the problem" {
            withServiceConfig (fun c -> { c with InputRoots = [ rlogs () ] }) (fun url ->
                let code, out, err =
                    cts [
                        "run"
                        "log-summary"
                        "synthetic/default.rlog.zst"
                        "--url"
                        url
                        "--out-dir"
                        TestEnv.tempDir "remote-path"
                        "--json"
                    ]

                Expect.equal code 0 err
                let final = JsonDocument.Parse(out).RootElement
                Expect.equal (final.GetProperty("status").GetString()) "completed" "completed"

                let code, _, err =
                    cts [ "run"; "log-summary"; "synthetic/missing.zst"; "--url"; url ]

                Expect.equal code 1 "the service refused the request (4xx): the command is at fault"
                Expect.stringContains err "does not exist under the input roots" "the service's reason")
        }
    ]

let remote =
    testSequenced
    <| testList "against a running service" [
        test "ping reports a healthy service" {
            withService (fun url ->
                let code, out, _ = cts [ "--url"; url; "ping" ]
                Expect.equal code ExitCode.Ok "exit 0"
                Expect.stringContains out "is healthy" "healthy"
                Expect.isMatch out @"store_reachable +pass" "checks listed, aligned")
        }
        test "capabilities --json prints the service's document" {
            withService (fun url ->
                let code, out, _ = cts [ "capabilities"; "--url"; url; "--json" ]
                Expect.equal code ExitCode.Ok "exit 0"
                let root = JsonDocument.Parse(out).RootElement
                Expect.equal (root.GetProperty("tools").GetArrayLength()) CtsLite.Tools.Catalog.tools.Length "tools"
                Expect.equal (root.GetProperty("api_version").GetString()) Product.ApiVersion "api version")
        }
        test "cap is an alias and prints text" {
            withService (fun url ->
                let code, out, _ = cts [ "cap"; "-u"; url ]
                Expect.equal code ExitCode.Ok "exit 0"
                Expect.stringContains out "Tools (cts run <tool> <input>):" "tools heading"
                Expect.stringContains out "Features: health_check" "features")
        }
        test "version shows client and service" {
            withService (fun url ->
                let code, out, _ = cts [ "version"; "--url"; url ]
                Expect.equal code ExitCode.Ok "exit 0"
                Expect.stringContains out $"cts {Product.version}" "client"
                Expect.stringContains out $"service {Product.version} at {url}" "service")
        }
    ]

let local =
    testList "without a service" [
        test "an unreachable service is exit 2 with the URL named" {
            let url = $"http://127.0.0.1:{closedPort ()}"
            let code, _, err = cts [ "ping"; "--url"; url; "--timeout"; "5" ]
            Expect.equal code ExitCode.ServiceError "exit 2"
            Expect.stringContains err url "names the URL"
        }
        test "version still prints the client version when the service is down" {
            let code, out, err = cts [ "version"; "--url"; $"http://127.0.0.1:{closedPort ()}" ]
            Expect.equal code ExitCode.Ok "exit 0"
            Expect.stringContains out $"cts {Product.version}" "client"
            Expect.stringContains err "cannot reach" "note"
        }
        test "usage errors are exit 1 and help is exit 0" {
            let code, _, err = cts [ "frobnicate" ]
            Expect.equal code ExitCode.ClientError "unknown command"
            Expect.stringContains err "unrecognized" "says why"
            let helpCode, help, _ = cts [ "--help" ]
            Expect.equal helpCode ExitCode.Ok "help"

            for command in [ "ping"; "capabilities"; "version" ] do
                Expect.stringContains help command $"help lists {command}"

            let noCommand, _, _ = cts []
            Expect.equal noCommand ExitCode.ClientError "no command"
            let badTimeout, _, timeoutErr = cts [ "--timeout"; "0"; "ping" ]
            Expect.equal badTimeout ExitCode.ClientError "bad timeout"
            Expect.stringContains timeoutErr "--timeout" "names the option"
        }
        test "--url beats CTS_URL beats the default" {
            let env name =
                match name with
                | "CTS_URL" -> Some "http://from-env:1/"
                | _ -> None

            Expect.equal (Client.resolveUrl (Some "http://flag:2") env) "http://flag:2" "flag"
            Expect.equal (Client.resolveUrl None env) "http://from-env:1" "env, trailing slash trimmed"
            Expect.equal (Client.resolveUrl None (fun _ -> None)) "http://127.0.0.1:8080" "default"
        }
        testProperty "version comparison is a total order on numeric versions" (fun (a: byte, b: byte, c: byte) ->
            let v = $"{a}.{b}.{c}"
            let next = $"{a}.{b}.{int c + 1}"

            Remote.versionAtLeast v v
            && Remote.versionAtLeast next v
            && not (Remote.versionAtLeast v next))
    ]

let cliTests = [ remote; remoteRuns; local ]
