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

/// A real Kestrel service on a free loopback port for the duration of `f`.
let withService (f: string -> unit) =
    let dataDir = TestEnv.tempDir "cli"

    let config = {
        Config.defaults () with
            DataDir = dataDir
            ApiPort = 0
            LogLevel = Microsoft.Extensions.Logging.LogLevel.Warning
    }

    use store =
        match SqliteStore.open' dataDir with
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

/// A port nothing listens on.
let closedPort () =
    let listener = new Net.Sockets.TcpListener(Net.IPAddress.Loopback, 0)
    listener.Start()
    let port = (listener.LocalEndpoint :?> Net.IPEndPoint).Port
    listener.Stop()
    port

let remote =
    testSequenced
    <| testList "against a running service" [
        test "ping reports a healthy service" {
            withService (fun url ->
                let code, out, _ = cts [ "--url"; url; "ping" ]
                Expect.equal code ExitCode.Ok "exit 0"
                Expect.stringContains out "is healthy" "healthy"
                Expect.stringContains out "store_reachable: pass" "checks listed")
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
                Expect.stringContains out "Tools:" "tools heading"
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

let cliTests = [ remote; local ]
